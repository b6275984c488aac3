//! virtio-blk's request queue served by several threads at once (issue 15), as QEMU's thread pool
//! (`aio=threads`) serves a virtio-blk queue.
//!
//! The device's worker (worker.rs) wakes on the queue's notification, takes the available chains
//! off the ring and queues them as jobs; it and [`IO_THREADS`] I/O threads run the jobs, so
//! several requests of the queue are in flight together. The worker leaves the queue's
//! notifications off while jobs are in flight: a thread that finishes a job takes the next chain
//! itself, and the one that finishes the last job wakes the worker, which turns them on again. A
//! driver that keeps its queue full then notifies (a guest exit) and wakes the worker never. Each job goes on the used ring when it
//! is done, in whatever order jobs finish, with its own head index and length.
//!
//! - **Barriers** (a FLUSH): a job is numbered as its chain leaves the ring, and a barrier is
//!   queued only once every job numbered before it is on the used ring, so the writes before a
//!   FLUSH are in the image before its fdatasync.
//! - **Interrupts**: a thread that completes a job asks whether the driver wants an interrupt
//!   (EVENT_IDX's used_event, else VRING_AVAIL_F_NO_INTERRUPT) only when no queued job is left for
//!   a thread to take; the thread that takes the last one asks for all of them, so a burst of
//!   completions raises one interrupt.
//! - **Pausing**: each job holds the transport's pause gate from the moment it is taken off the
//!   ring until its used entry is written, so QMP `stop`, a snapshot or a migration waits for requests in flight,
//!   and the used index it saves covers every chain the device took.
//! - **Bounds**: at most a queue's worth of jobs are in flight; no chain is taken beyond that (a
//!   driver that makes the same heads available again and again cannot grow the job list).
//! - **Stopping** (reset, shutdown): the worker stops first, then the I/O threads finish every
//!   queued job and end, so a disk flush after [`IoPool::stop`] covers every write.

use super::chain::{ChainError, DescChain};
use super::worker::{self, PauseGate};
use super::{driver_wants_interrupt, Drained, GuestMemory, QueueFault, VirtioInterrupt};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

/// I/O threads per device besides its worker (which runs jobs too): eight requests in flight,
/// what Linux's and the benchmark's queue depth 8 keep available. Idle ones sleep on a condvar;
/// 7 beat 3 on the 2-core benchmark host (docs/PERFORMANCE.md), where requests wait for a core
/// more than for the disk. QEMU's thread pool grows to 64 threads.
pub const IO_THREADS: usize = 7;

/// Serves one request; returns the used length.
pub type Serve = dyn Fn(&GuestMemoryMmap, Result<DescChain, ChainError>) -> u32 + Send + Sync;
/// Whether a request must wait for every request before it (a FLUSH).
pub type IsBarrier = fn(&GuestMemoryMmap, &DescChain) -> bool;

struct Job {
    head: u16,
    /// Its place in the order chains left the ring.
    seq: u64,
    chain: Result<DescChain, ChainError>,
}

#[derive(Default)]
struct Jobs {
    queued: VecDeque<Job>,
    /// The jobs taken off the ring and not yet on the used ring, by `seq`.
    in_flight: BTreeSet<u64>,
    /// Threads waiting on `done` (a barrier, or the worker at the limit).
    waiting: usize,
    stopping: bool,
}

/// What taking a chain found.
enum Pop {
    Job(Job),
    /// No chain available.
    Empty,
    /// A queue's worth of jobs in flight already.
    Full,
}

struct Shared {
    name: &'static str,
    mem: GuestMemory,
    queue: Mutex<Queue>,
    interrupt: Arc<VirtioInterrupt>,
    gate: Arc<PauseGate>,
    serve: Box<Serve>,
    is_barrier: IsBarrier,
    jobs: Mutex<Jobs>,
    /// A job was queued, or the pool stops.
    work: Condvar,
    /// A job went on the used ring, or one was queued (for threads in `Jobs::waiting`).
    done: Condvar,
    /// The used ring failed: the device needs a reset, the worker stops taking chains.
    broken: AtomicBool,
    /// The queue's notifications are off (the worker turned them off and left them off while
    /// jobs are in flight): the driver does not notify, so a thread that finishes a job takes the
    /// next chain itself, and the one that finishes the last job wakes the worker (`kick`), which
    /// turns them on again.
    dispatching: AtomicBool,
    /// The queue's notification eventfd, to wake the worker.
    kick: std::sync::OnceLock<vmm_sys_util::eventfd::EventFd>,
    /// Chains taken off the ring, by any thread (changed under the queue lock).
    taken: AtomicU64,
    limit: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One virtio-blk queue's jobs and I/O threads.
pub struct IoPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// Start `threads` I/O threads over `queue`; [`IoPool::dispatch`] (on the worker) feeds them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &'static str,
        mem: GuestMemory,
        queue: Queue,
        interrupt: Arc<VirtioInterrupt>,
        gate: Arc<PauseGate>,
        serve: Box<Serve>,
        is_barrier: IsBarrier,
        threads: usize,
    ) -> std::io::Result<Self> {
        let limit = usize::from(queue.max_size().max(1));
        let shared = Arc::new(Shared {
            name,
            mem,
            queue: Mutex::new(queue),
            interrupt,
            gate,
            serve,
            is_barrier,
            jobs: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            broken: AtomicBool::new(false),
            dispatching: AtomicBool::new(false),
            kick: std::sync::OnceLock::new(),
            taken: AtomicU64::new(0),
            limit,
        });
        let mut pool = Self {
            shared,
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let sh = pool.shared.clone();
            // On failure `pool` drops here, which stops the threads already started.
            let t = rvmm_sandbox::spawn(
                rvmm_sandbox::ThreadKind::Worker,
                format!("{name}-io{i}"),
                move || sh.io_thread(),
            )?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// A handle for the worker's handler.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher(self.shared.clone())
    }

    /// Finish every queued job and join the I/O threads (stop the worker first).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        lock(&self.shared.jobs).stopping = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Without threads (none could start) the jobs still have to end.
        self.shared.help();
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The worker's side of an [`IoPool`].
pub struct Dispatcher(Arc<Shared>);

impl Dispatcher {
    /// Take the available chains (about a queue's worth per call) and run them on the pool and
    /// this thread; returns when no queued job is left for this thread to take.
    pub fn dispatch(&self) -> Result<Drained, QueueFault> {
        let sh = &*self.0;
        sh.dispatching.store(true, Ordering::Release);
        let res = sh.dispatch();
        if res.is_err() {
            // Under the queue lock: no thread takes a chain after this.
            let q = lock(&sh.queue);
            sh.dispatching.store(false, Ordering::Release);
            drop(q);
        }
        res
    }

    /// The device's name, for messages.
    pub fn name(&self) -> &'static str {
        self.0.name
    }
}

impl Shared {
    fn dispatch(&self) -> Result<Drained, QueueFault> {
        if self.broken.load(Ordering::Acquire) {
            return Err(QueueFault::Broken);
        }
        let mem = &*self.mem;
        let budget = {
            let q = lock(&self.queue);
            if !q.ready() {
                return Ok(Drained::All);
            }
            u64::from(q.size().max(1))
        };
        // Chains taken by this call and by I/O threads meanwhile count against the budget.
        let start = self.taken.load(Ordering::Acquire);
        let mut seen = start;
        // Passes in a row that took no chain although the avail index said there were some.
        let mut idle = 0;
        loop {
            let mut batch = Vec::new();
            let mut full = false;
            {
                let mut q = lock(&self.queue);
                q.disable_notification(mem).map_err(QueueFault::Used)?;
                while self.taken.load(Ordering::Acquire) - start < budget {
                    match self.pop(&mut q)? {
                        Pop::Job(job) => batch.push(job),
                        Pop::Empty => break,
                        Pop::Full => {
                            full = true;
                            break;
                        }
                    }
                }
            }
            for job in batch {
                self.queue_job(job);
            }
            self.help();
            if full {
                self.wait_until(|jobs| jobs.in_flight.len() < self.limit);
            }
            if self.broken.load(Ordering::Acquire) {
                return Err(QueueFault::Broken);
            }
            let now = self.taken.load(Ordering::Acquire);
            if now - start >= budget {
                return Ok(Drained::Budget);
            }
            if full {
                continue;
            }
            {
                let mut q = lock(&self.queue);
                // Jobs in flight: notifications stay off; the threads finishing them take what
                // the driver adds, and the last one wakes this worker.
                if !lock(&self.jobs).in_flight.is_empty() {
                    return Ok(Drained::All);
                }
                // Re-enable, then look again: a chain added in between would otherwise wait.
                if !q.enable_notification(mem).map_err(QueueFault::Used)? {
                    self.dispatching.store(false, Ordering::Release);
                    return Ok(Drained::All);
                }
            }
            // Twice nothing: the device's own ring writes move the avail index (a used ring
            // over it), which no pass will ever satisfy.
            idle = if now != seen { 0 } else { idle + 1 };
            seen = now;
            if idle == 2 {
                return Err(QueueFault::NoProgress);
            }
        }
    }

    /// Take the next available chain off the ring (`q` is the locked queue).
    fn pop(&self, q: &mut Queue) -> Result<Pop, QueueFault> {
        let mem = &*self.mem;
        let mut jobs = lock(&self.jobs);
        if jobs.stopping {
            return Ok(Pop::Empty);
        }
        if jobs.in_flight.len() >= self.limit {
            return Ok(Pop::Full);
        }
        let chain = match q.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => return Err(QueueFault::Avail(e)),
        };
        let Some(chain) = chain else {
            return Ok(Pop::Empty);
        };
        let seq = self.taken.fetch_add(1, Ordering::AcqRel);
        jobs.in_flight.insert(seq);
        // Released by whichever thread puts the job on the used ring. Taken while the worker's
        // handler call still counts, so a pause cannot have found the gate idle in between.
        self.gate.hold();
        Ok(Pop::Job(Job {
            head: chain.head_index(),
            seq,
            chain: DescChain::parse(chain, mem),
        }))
    }

    /// An I/O thread out of jobs while the worker dispatches: the next chain, if any (a fault
    /// is left for the worker to find and report).
    fn pop_while_dispatching(&self) -> Option<Job> {
        if !self.dispatching.load(Ordering::Acquire)
            || self.broken.load(Ordering::Acquire)
            || self.gate.is_paused()
        {
            return None;
        }
        let mut q = lock(&self.queue);
        if !self.dispatching.load(Ordering::Acquire) || !q.ready() {
            return None;
        }
        match self.pop(&mut q) {
            Ok(Pop::Job(job)) => Some(job),
            _ => None,
        }
    }

    /// Run queued jobs and wait for completions until `cond` holds.
    fn wait_until(&self, cond: impl Fn(&Jobs) -> bool) {
        loop {
            // Run what is queued here rather than wait for a thread to take it.
            self.help();
            let mut jobs = lock(&self.jobs);
            if cond(&jobs) {
                return;
            }
            if jobs.queued.is_empty() {
                jobs.waiting += 1;
                jobs = self.done.wait(jobs).unwrap_or_else(|e| e.into_inner());
                jobs.waiting -= 1;
            }
        }
    }

    /// Queue `job` for the threads; a barrier only once every job taken before it is done.
    fn queue_job(&self, job: Job) {
        let barrier = job
            .chain
            .as_ref()
            .is_ok_and(|c| (self.is_barrier)(&self.mem, c));
        if barrier {
            self.wait_until(|jobs| jobs.in_flight.first() == Some(&job.seq));
        }
        let mut jobs = lock(&self.jobs);
        jobs.queued.push_back(job);
        // The first queued job is left for this thread (a lone request needs no wake-up).
        let wake = jobs.queued.len() > 1;
        let waiters = jobs.waiting > 0;
        drop(jobs);
        if wake {
            self.work.notify_one();
        }
        if waiters {
            // A thread waiting for a barrier runs queued jobs too.
            self.done.notify_all();
        }
    }

    /// Run queued jobs on this thread until none is left.
    fn help(&self) {
        loop {
            let job = lock(&self.jobs).queued.pop_front();
            let Some(job) = job else { return };
            if let Some(next) = self.run(job) {
                self.queue_job(next);
            }
        }
    }

    fn io_thread(&self) {
        loop {
            let job = lock(&self.jobs).queued.pop_front();
            if let Some(job) = job {
                if let Some(next) = self.run(job) {
                    self.queue_job(next);
                }
                continue;
            }
            // Out of jobs: the driver may have made chains available without notifying.
            if let Some(job) = self.pop_while_dispatching() {
                self.queue_job(job);
                continue;
            }
            let mut jobs = lock(&self.jobs);
            while jobs.queued.is_empty() {
                if jobs.stopping {
                    return;
                }
                jobs = self.work.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Serve `job` and put it on the used ring.
    /// Then, with notifications off, take the next chain (before this job's hold on the pause
    /// gate ends, so a pause cannot slip in between) or, after the last job, wake the worker.
    fn run(&self, job: Job) -> Option<Job> {
        let (head, seq) = (job.head, job.seq);
        let len = (self.serve)(&self.mem, job.chain);
        if let Err(e) = self.complete(head, len) {
            if !self.broken.swap(true, Ordering::AcqRel) {
                super::queue_fault(self.name, 0, e, &self.interrupt);
            }
        }
        let mut jobs = lock(&self.jobs);
        jobs.in_flight.remove(&seq);
        let waiters = jobs.waiting > 0;
        drop(jobs);
        if waiters {
            self.done.notify_all();
        }
        let next = self.pop_while_dispatching();
        if next.is_none()
            && self.dispatching.load(Ordering::Acquire)
            && lock(&self.jobs).in_flight.is_empty()
        {
            if let Some(kick) = self.kick.get() {
                let _ = kick.write(1);
            }
        }
        self.gate.release();
        next
    }

    fn complete(&self, head: u16, len: u32) -> Result<(), QueueFault> {
        let mem = &*self.mem;
        if self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        lock(&self.queue)
            .add_used(mem, head, len)
            .map_err(QueueFault::Used)?;
        // A thread will take the next queued job and complete it: its check covers this one.
        if !lock(&self.jobs).queued.is_empty() {
            return Ok(());
        }
        if driver_wants_interrupt(&mut lock(&self.queue), mem)? {
            self.interrupt.signal_used_queue(0);
        }
        Ok(())
    }
}

/// Start `pool`'s worker: it dispatches on every notification of the queue (`notify`).
pub fn spawn_worker(
    pool: &IoPool,
    notify: vmm_sys_util::eventfd::EventFd,
    gate: &Arc<PauseGate>,
) -> std::io::Result<worker::Worker> {
    let again = notify.try_clone()?;
    let _ = pool.shared.kick.set(notify.try_clone()?);
    let dispatcher = pool.dispatcher();
    let interrupt = pool.shared.interrupt.clone();
    worker::spawn(
        dispatcher.name().into(),
        vec![notify],
        Vec::new(),
        gate,
        move |ev| {
            if let worker::WorkerEvent::Queue(0) = ev {
                match dispatcher.dispatch() {
                    Ok(Drained::All) => {}
                    // Come back after a pause had its turn.
                    Ok(Drained::Budget) => {
                        let _ = again.write(1);
                    }
                    // Already reported by the thread whose used-ring write failed.
                    Err(QueueFault::Broken) => return worker::Flow::Stop,
                    Err(e) => {
                        super::queue_fault(dispatcher.name(), 0, e, &interrupt);
                        return worker::Flow::Stop;
                    }
                }
            }
            worker::Flow::Continue
        },
    )
}
