//! The thread a device's queue work runs on: it waits (epoll) on the queues' notification eventfds,
//! any extra fds the device needs (a tap), and a stop eventfd, and calls the device's handler.
//!
//! Pausing (QMP `stop`, issue 6 "devices stop processing queues"): every worker of a transport
//! passes a [`PauseGate`] before each handler call. While the gate is closed the worker calls no
//! handler and leaves the queue notification eventfds unread, so notifications that arrive
//! meanwhile stay counted and the worker catches up on them at [`PauseGate::resume`].

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

#[derive(Default)]
struct GateState {
    paused: bool,
    /// Handler calls under way.
    busy: usize,
}

/// Lets the VMM hold a device's workers between handler calls (VM paused) and release them.
#[derive(Default)]
pub struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl PauseGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Close the gate and wait until no handler runs: once this returns, the workers consume no
    /// descriptor and raise no interrupt until [`PauseGate::resume`].
    pub fn pause(&self) {
        let mut st = self.lock();
        st.paused = true;
        while st.busy > 0 {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Open the gate: the workers handle what arrived while paused.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Wait while paused, then count a handler call; false if `stopping` was set meanwhile.
    fn enter(&self, stopping: &AtomicBool) -> bool {
        let mut st = self.lock();
        while st.paused && !stopping.load(Ordering::Acquire) {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if stopping.load(Ordering::Acquire) {
            return false;
        }
        st.busy += 1;
        true
    }

    /// Count work that goes on after the handler call that started it returned (a virtio-blk
    /// request on an I/O thread): [`PauseGate::pause`] waits for it as for a handler call. Only
    /// from a handler call, so the gate cannot have been found idle in between.
    pub(crate) fn hold(&self) {
        self.lock().busy += 1;
    }

    /// End what [`PauseGate::hold`] counted.
    pub(crate) fn release(&self) {
        self.leave();
    }

    fn leave(&self) {
        let mut st = self.lock();
        st.busy -= 1;
        drop(st);
        self.changed.notify_all();
    }

    /// Wake workers waiting in [`PauseGate::enter`] so they see their stop flag.
    fn wake(&self) {
        // Taking the lock orders the stop flag's store before a waiter's re-check.
        drop(self.lock());
        self.changed.notify_all();
    }
}

/// A running worker thread; dropping it stops and joins the thread.
pub struct Worker {
    stop: EventFd,
    stopping: Arc<AtomicBool>,
    gate: Arc<PauseGate>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Stop the thread and wait for it (device reset or VM shutdown).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stopping.store(true, Ordering::Release);
            self.gate.wake();
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
/// to wait for). `handler` runs on the worker for each event, whenever `gate` is open.
///
/// Under the sandbox the set-up runs on its spawner thread (docs/SANDBOX.md): a worker started
/// from a vCPU (the driver's DRIVER_OK) must not inherit the vCPU's filter.
pub fn spawn(
    name: String,
    queues: Vec<EventFd>,
    fds: Vec<(RawFd, EventSet)>,
    gate: &Arc<PauseGate>,
    handler: impl FnMut(WorkerEvent) -> Flow + Send + 'static,
) -> std::io::Result<Worker> {
    let gate = gate.clone();
    rvmm_sandbox::on_spawner(move || spawn_here(name, queues, fds, gate, handler))
}

fn spawn_here(
    name: String,
    queues: Vec<EventFd>,
    fds: Vec<(RawFd, EventSet)>,
    gate: Arc<PauseGate>,
    mut handler: impl FnMut(WorkerEvent) -> Flow + Send + 'static,
) -> std::io::Result<Worker> {
    let stopping = Arc::new(AtomicBool::new(false));
    let (thread_gate, thread_stopping) = (gate.clone(), stopping.clone());
    // One handler call behind the gate; None when the worker is stopping.
    let mut call = move |ev: WorkerEvent, queues: &[EventFd]| -> Option<Flow> {
        if !thread_gate.enter(&thread_stopping) {
            return None;
        }
        if let WorkerEvent::Queue(i) = ev {
            // Consume the notification before looking at the ring, so none is lost.
            let _ = queues[i].read();
        }
        let flow = handler(ev);
        thread_gate.leave();
        Some(flow)
    };
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
    let thread = rvmm_sandbox::spawn(rvmm_sandbox::ThreadKind::Worker, name, move || {
        let mut events = vec![EpollEvent::default(); queues.len() + fds.len() + 1];
        // Edge-triggered fds may already be ready: give the handler one look at each first.
        for i in 0..fds.len() {
            if call(WorkerEvent::Fd(i, EventSet::IN | EventSet::OUT), &queues)
                != Some(Flow::Continue)
            {
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
                let event = if token == STOP_TOKEN {
                    return;
                } else if token >= FD_TOKEN_BASE {
                    WorkerEvent::Fd((token - FD_TOKEN_BASE) as usize, ev.event_set())
                } else {
                    WorkerEvent::Queue(token as usize)
                };
                if call(event, &queues) != Some(Flow::Continue) {
                    return;
                }
            }
        }
    })?;
    Ok(Worker {
        stop,
        stopping,
        gate,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn counting_worker(
        gate: &Arc<PauseGate>,
        delay: Duration,
    ) -> (EventFd, Arc<AtomicUsize>, Worker) {
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let w = spawn(
            "test-worker".into(),
            vec![notify.try_clone().unwrap()],
            Vec::new(),
            gate,
            move |ev| {
                assert_eq!(ev, WorkerEvent::Queue(0));
                std::thread::sleep(delay);
                c.fetch_add(1, Ordering::SeqCst);
                Flow::Continue
            },
        )
        .unwrap();
        (notify, calls, w)
    }

    #[test]
    fn notifications_while_paused_are_handled_at_resume() {
        let gate = Arc::new(PauseGate::default());
        let (notify, calls, w) = counting_worker(&gate, Duration::ZERO);
        notify.write(1).unwrap();
        wait_for("the first notification", || {
            calls.load(Ordering::SeqCst) == 1
        });
        gate.pause();
        assert!(gate.is_paused());
        notify.write(1).unwrap();
        notify.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "handled while paused");
        gate.resume();
        // Both writes are one eventfd count: one handler call processes the whole ring.
        wait_for("the catch-up", || calls.load(Ordering::SeqCst) == 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        w.stop();
    }

    #[test]
    fn pause_waits_for_the_running_handler() {
        let gate = Arc::new(PauseGate::default());
        let (notify, calls, w) = counting_worker(&gate, Duration::from_millis(200));
        notify.write(1).unwrap();
        // Let the handler start (it sleeps 200 ms), then pause: pause returns after it ended.
        std::thread::sleep(Duration::from_millis(50));
        gate.pause();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "pause returned mid-handler"
        );
        w.stop();
    }

    #[test]
    fn a_paused_worker_still_stops() {
        let gate = Arc::new(PauseGate::default());
        let (notify, calls, w) = counting_worker(&gate, Duration::ZERO);
        gate.pause();
        notify.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The worker waits in the gate with the event in hand; stop must still join it.
        let t = Instant::now();
        w.stop();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
