//! The thread a device's queue work runs on: it waits (epoll) on the queues' notification eventfds,
//! any extra fds the device needs (a tap), and a stop eventfd, and calls the device's handler.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// What woke the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The driver notified queue `n`.
    Queue(usize),
    /// Extra fd `n` (in the order given to [`spawn`]) is readable or writable.
    Fd(usize, EventSet),
}

/// What the handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop the worker (the device entered NEEDS_RESET and waits for the driver).
    Stop,
}

const STOP_TOKEN: u64 = u64::MAX;
const FD_TOKEN_BASE: u64 = 1 << 32;

/// A running worker thread; dropping it stops and joins the thread.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Stop the thread and wait for it (device reset or VM shutdown).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Start a worker named `name` over `queues` (notification eventfds) and `fds` (with the events
/// to wait for). `handler` runs on the worker for each event.
pub fn spawn(
    name: String,
    queues: Vec<EventFd>,
    fds: Vec<(RawFd, EventSet)>,
    mut handler: impl FnMut(WorkerEvent) -> Flow + Send + 'static,
) -> std::io::Result<Worker> {
    let epoll = Epoll::new()?;
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let stop_rx = stop.try_clone()?;
    epoll.ctl(
        ControlOperation::Add,
        stop_rx.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP_TOKEN),
    )?;
    for (i, q) in queues.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            q.as_raw_fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    for (i, (fd, set)) in fds.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            *fd,
            EpollEvent::new(*set | EventSet::EDGE_TRIGGERED, FD_TOKEN_BASE + i as u64),
        )?;
    }
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let mut events = vec![EpollEvent::default(); queues.len() + fds.len() + 1];
        // Edge-triggered fds may already be ready: give the handler one look at each first.
        for i in 0..fds.len() {
            if handler(WorkerEvent::Fd(i, EventSet::IN | EventSet::OUT)) == Flow::Stop {
                return;
            }
        }
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio worker: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                let flow = if token == STOP_TOKEN {
                    return;
                } else if token >= FD_TOKEN_BASE {
                    handler(WorkerEvent::Fd(
                        (token - FD_TOKEN_BASE) as usize,
                        ev.event_set(),
                    ))
                } else {
                    let i = token as usize;
                    // Consume the notification before looking at the ring, so none is lost.
                    let _ = queues[i].read();
                    handler(WorkerEvent::Queue(i))
                };
                if flow == Flow::Stop {
                    return;
                }
            }
        }
    })?;
    Ok(Worker {
        stop,
        thread: Some(thread),
    })
}
