use super::*;

fn shadow(w: u32, h: u32, fill: u32) -> Framebuffer {
    let mut fb = Framebuffer::new();
    fb.resize(w, h);
    fb.pixels_mut().fill(fill);
    fb
}

#[test]
fn first_render_resizes_and_covers_everything() {
    let s = shadow(4, 3, 7);
    let mut out = Framebuffer::new();
    let r = out.sync_rows(&s, 1, 1, &[1; 3]);
    assert!(r.resized);
    assert_eq!(
        r.dirty,
        vec![Rect {
            x: 0,
            y: 0,
            width: 4,
            height: 3
        }]
    );
    assert_eq!(out.pixels(), s.pixels());
    // Nothing newer: nothing dirty.
    let r = out.sync_rows(&s, 1, 1, &[1; 3]);
    assert_eq!(r, RenderResult::default());
}

#[test]
fn changed_rows_give_tight_bands_per_consumer() {
    let mut s = shadow(8, 4, 0);
    let (mut a, mut b) = (Framebuffer::new(), Framebuffer::new());
    a.sync_rows(&s, 1, 1, &[1; 4]);
    b.sync_rows(&s, 1, 1, &[1; 4]);
    s.row_mut(1)[2] = 5;
    s.row_mut(2)[6] = 5;
    let rows = [1, 2, 2, 1];
    let want = vec![Rect {
        x: 2,
        y: 1,
        width: 5,
        height: 2,
    }];
    assert_eq!(a.sync_rows(&s, 1, 2, &rows).dirty, want);
    assert_eq!(a.pixel(6, 2), Some(5));
    // The second consumer still sees the change; the first no longer does.
    assert_eq!(b.sync_rows(&s, 1, 2, &rows).dirty, want);
    assert!(a.sync_rows(&s, 1, 2, &rows).dirty.is_empty());
    // A stamped row whose pixels did not change is not reported.
    assert!(a.sync_rows(&s, 1, 3, &[3, 3, 3, 3]).dirty.is_empty());
}

#[test]
fn another_source_or_size_resizes() {
    let s = shadow(2, 2, 1);
    let mut out = Framebuffer::new();
    out.sync_rows(&s, 1, 1, &[1; 2]);
    assert!(out.sync_rows(&s, 2, 1, &[1; 2]).resized);
    let t = shadow(3, 2, 1);
    assert!(out.sync_rows(&t, 2, 1, &[1; 2]).resized);
    assert_eq!((out.width(), out.height()), (3, 2));
}

#[test]
fn resize_is_clamped() {
    let mut fb = Framebuffer::new();
    fb.resize(100_000, 5);
    assert_eq!((fb.width(), fb.height()), (MAX_WIDTH, 5));
    assert!(fb.row(5).is_empty());
    assert_eq!(fb.pixel(MAX_WIDTH, 0), None);
}
