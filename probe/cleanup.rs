//! What a process makes (namespaces, processes, rules, files) is removed
//! however the process ends: on return, on a panic, and on SIGINT, SIGTERM
//! or SIGHUP. One registry for the whole process, used by the lab and by the
//! tests' guards alike.
//!
//! A guard registers its undo ([`Cleanup::register`]) *before* making
//! anything, and makes things inside [`making`]. Dropping the guard runs the
//! undo. On a signal, a thread of this module waits for the steps under way
//! to finish, lets no new one start, runs every registered undo (an undo the
//! owner is already running is waited for, not run twice), then ends the
//! process by that same signal, as a shell expects. Further signals while it
//! cleans up change nothing: the cleanup is not cut short. The commands an
//! undo runs go in process groups of their own (see [`own_process_group`]),
//! so a second Ctrl-C at the terminal does not kill them either.
//!
//! The other use of the signal thread is [`Forward`]: while `lab exec` runs
//! a command in the foreground, signals sent to podprobe are passed on to
//! it, and podprobe waits for it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::Result;

/// The signals that end a process and get its cleanup.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// How long a cleanup waits for a step under way (a running `iptables`) to
/// finish before it goes ahead anyway.
const STEP_WAIT: Duration = Duration::from_secs(30);

type Undo = Box<dyn FnOnce() -> Result<()> + Send>;

/// One registered undo; its mutex is held while it runs, so the owner and
/// the signal thread never run it twice or at once.
struct Entry {
    what: String,
    undo: Mutex<Option<Undo>>,
}

static ENTRIES: LazyLock<Mutex<BTreeMap<u64, Arc<Entry>>>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Set when a signal's cleanup begins: no new step may start.
static EXITING: AtomicBool = AtomicBool::new(false);
/// Steps that make something hold it shared; the cleanup takes it alone.
static STEPS: RwLock<()> = RwLock::new(());
/// The write end of the pipe the signal handler writes to.
static PIPE: AtomicI32 = AtomicI32::new(-1);
/// Where signals go while a foreground child runs ([`Forward`]).
static FORWARD: Mutex<Forwarding> = Mutex::new(Forwarding {
    active: false,
    pid: None,
    pending: None,
});

struct Forwarding {
    active: bool,
    pid: Option<libc::pid_t>,
    /// A signal that came before the child was started.
    pending: Option<libc::c_int>,
}

thread_local! {
    /// Steps of this thread under way (nested steps take the lock once).
    static STEP_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// This thread is running an undo: its steps are part of the cleanup.
    static CLEANING: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Something made, to be undone when this guard drops or a signal ends the
/// process, whichever comes first.
#[must_use = "dropping a Cleanup undoes at once"]
pub struct Cleanup {
    id: u64,
    entry: Arc<Entry>,
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleanup")
            .field("what", &self.entry.what)
            .finish()
    }
}

impl Cleanup {
    /// Registers `undo` for `what` (a name for messages). Register before
    /// making the thing, so that no signal can come between the two; the
    /// undo must cope with finding nothing, or half of it.
    pub fn register(
        what: impl Into<String>,
        undo: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Cleanup {
        install();
        let entry = Arc::new(Entry {
            what: what.into(),
            undo: Mutex::new(Some(Box::new(undo))),
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock(&ENTRIES).insert(id, Arc::clone(&entry));
        Cleanup { id, entry }
    }

    /// Undoes now and says what went wrong, if anything.
    pub fn run(self) -> Result<()> {
        self.undo()
    }

    /// Keeps what was made: nothing is undone, on drop or on a signal.
    pub fn forget(self) {
        lock(&self.entry.undo).take();
    }

    fn undo(&self) -> Result<()> {
        let result = run_entry(&self.entry);
        lock(&ENTRIES).remove(&self.id);
        // A signal's cleanup is under way (and waited for this undo): the
        // process ends with it, and this thread must not go on to report an
        // error or exit first.
        if EXITING.load(Ordering::SeqCst) && !CLEANING.get() {
            wait_for_exit();
        }
        result
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(err) = self.undo() {
            complain(&format!("removing {}: {err}", self.entry.what));
        }
    }
}

/// Runs an entry's undo unless it ran already; the entry's lock is held
/// meanwhile, so a second runner waits for the first to finish.
fn run_entry(entry: &Entry) -> Result<()> {
    let mut slot = lock(&entry.undo);
    let Some(undo) = slot.take() else {
        return Ok(());
    };
    let _cleaning = ThreadFlag::set(&CLEANING, true);
    undo()
}

/// Runs `step`, which makes something a registered undo removes (creates a
/// namespace, starts a process, runs `iptables`). A signal's cleanup waits
/// for it to finish; once the cleanup has begun, the step does not start
/// and the calling thread waits for the process to end.
pub fn making<T>(step: impl FnOnce() -> T) -> T {
    if CLEANING.get() || STEP_DEPTH.get() > 0 {
        return step();
    }
    if EXITING.load(Ordering::SeqCst) {
        wait_for_exit();
    }
    let shared = STEPS.read().unwrap_or_else(PoisonError::into_inner);
    if EXITING.load(Ordering::SeqCst) {
        drop(shared);
        wait_for_exit();
    }
    let _depth = ThreadFlag::set(&STEP_DEPTH, 1);
    step()
}

/// Sets a thread-local for as long as it lives, also when unwinding.
struct ThreadFlag<T: Copy + 'static> {
    key: &'static std::thread::LocalKey<Cell<T>>,
    was: T,
}

impl<T: Copy + 'static> ThreadFlag<T> {
    fn set(key: &'static std::thread::LocalKey<Cell<T>>, value: T) -> Self {
        ThreadFlag {
            key,
            was: key.replace(value),
        }
    }
}

impl<T: Copy + 'static> Drop for ThreadFlag<T> {
    fn drop(&mut self) {
        self.key.set(self.was);
    }
}

/// The cleanup ends the process; this thread has nothing more to do.
fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// Puts a command's process in a process group of its own: a Ctrl-C at the
/// terminal reaches podprobe, whose cleanup decides, and not the `ip` or
/// `iptables` it is running (which a second Ctrl-C would otherwise cut
/// short half-way).
pub fn own_process_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

/// Makes the command's process receive SIGTERM when podprobe dies, even by
/// SIGKILL (the thread that spawns it must live as long as podprobe waits
/// for it: Linux ties this to the spawning thread).
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("podprobe exited"));
            }
            Ok(())
        })
    };
    cmd
}

/// Registers the removal of the file or directory (with everything in it)
/// at `path`, which the caller makes next: it goes when the guard drops or
/// a signal ends the process.
pub fn removing(path: impl Into<std::path::PathBuf>) -> Cleanup {
    let path = path.into();
    Cleanup::register(path.display().to_string(), move || {
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        };
        removed.map_err(|e| crate::Error::io(path.display().to_string(), e))
    })
}

/// A child process, killed and reaped when dropped or on a signal.
#[derive(Debug)]
pub struct Killed {
    child: Arc<Mutex<Child>>,
    cleanup: Option<Cleanup>,
}

impl Killed {
    /// Spawns `cmd` (as a step, see [`making`]) and guards the process.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Killed> {
        let slot: Arc<Mutex<Option<Arc<Mutex<Child>>>>> = Arc::default();
        let what = format!("process {}", cmd.get_program().to_string_lossy());
        let cleanup = Self::register(what, Arc::clone(&slot));
        let child = Arc::new(Mutex::new(making(|| cmd.spawn())?));
        *lock(&slot) = Some(Arc::clone(&child));
        Ok(Killed {
            child,
            cleanup: Some(cleanup),
        })
    }

    /// Guards a process spawned already (a signal between its spawn and
    /// this call finds it unguarded: prefer [`Killed::spawn`]).
    pub fn adopt(child: Child) -> Killed {
        let what = format!("process {}", child.id());
        let child = Arc::new(Mutex::new(child));
        let slot = Arc::new(Mutex::new(Some(Arc::clone(&child))));
        let cleanup = Self::register(what, slot);
        Killed {
            child,
            cleanup: Some(cleanup),
        }
    }

    fn register(what: String, slot: Arc<Mutex<Option<Arc<Mutex<Child>>>>>) -> Cleanup {
        Cleanup::register(what, move || {
            if let Some(child) = lock(&slot).take() {
                let mut child = lock(&child);
                let _ = child.kill();
                let _ = child.wait();
            }
            Ok(())
        })
    }

    /// Waits for the process to exit by itself, up to `timeout`; its
    /// status, or `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn id(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Kills the process (SIGKILL); [`Killed::wait_timeout`] reaps it.
    pub fn kill(&self) {
        let _ = lock(&self.child).kill();
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// The child's stdout, if piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// The child's stderr, if piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        lock(&self.child).stderr.take()
    }

    /// Asks the process to finish (SIGTERM) and waits up to `timeout`, so
    /// that it can flush what it wrote; then it is killed if still there.
    pub fn stop(mut self, timeout: Duration) {
        if let Ok(pid) = libc::pid_t::try_from(self.id()) {
            // SAFETY: kill has no memory-safety preconditions; the child is
            // not reaped yet (we hold it), so the pid is still its own.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.wait_timeout(timeout);
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.run();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.run();
        }
    }
}

/// While alive, signals sent to podprobe go to the foreground child instead
/// (not those the terminal sent: its whole process group, the child too,
/// got them already); podprobe neither dies of them nor cleans up.
#[must_use]
pub struct Forward(());

impl Forward {
    /// Starts forwarding; a signal before [`Forward::to`] waits for the child.
    pub fn begin() -> Forward {
        install();
        *lock(&FORWARD) = Forwarding {
            active: true,
            pid: None,
            pending: None,
        };
        Forward(())
    }

    /// The child to forward to, from now on.
    pub fn to(&self, pid: u32) {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return;
        };
        let mut forwarding = lock(&FORWARD);
        forwarding.pid = Some(pid);
        if let Some(signal) = forwarding.pending.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        lock(&FORWARD).active = false;
    }
}

/// A child's exit status as a shell reports it: its code, or 128 + the
/// signal that killed it.
pub fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// One line to stderr; a terminal that hung up (SIGHUP) must not turn it
/// into a panic.
fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "podprobe: {message}");
}

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: only async-signal-safe calls (write) and reads of the
    // kernel-provided siginfo; errno is restored for the interrupted code.
    unsafe {
        let errno = *libc::__errno_location();
        let code = if info.is_null() { 0 } else { (*info).si_code };
        let message = [signal, code];
        libc::write(
            PIPE.load(Ordering::Relaxed),
            message.as_ptr().cast(),
            std::mem::size_of_val(&message),
        );
        *libc::__errno_location() = errno;
    }
}

/// Installs the handlers and starts the signal thread, once per process.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array; sigaction gets a
        // fully initialised action whose handler is async-signal-safe.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                complain("cannot install signal handlers: no pipe");
                return;
            }
            let flags = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        PIPE.store(fds[1], Ordering::SeqCst);
        let reader = fds[0];
        if std::thread::Builder::new()
            .name("podprobe-signals".into())
            .spawn(move || signal_thread(reader))
            .is_err()
        {
            complain("cannot install signal handlers: no thread");
            return;
        }
        for signal in SIGNALS {
            // SAFETY: as above.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
}

fn signal_thread(reader: libc::c_int) {
    loop {
        let mut message = [0 as libc::c_int; 2];
        // SAFETY: reads at most the array's size into it.
        let n = unsafe {
            libc::read(
                reader,
                message.as_mut_ptr().cast(),
                std::mem::size_of_val(&message),
            )
        };
        if n != std::mem::size_of_val(&message) as isize {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let [signal, code] = message;
        if forwarded(signal, code) {
            continue;
        }
        clean_up_and_die(signal);
    }
}

/// Passes the signal on while a foreground child runs; false otherwise.
fn forwarded(signal: libc::c_int, code: libc::c_int) -> bool {
    let mut forwarding = lock(&FORWARD);
    if !forwarding.active {
        return false;
    }
    // The terminal signals the whole foreground group, the child too.
    if code != libc::SI_KERNEL {
        match forwarding.pid {
            // SAFETY: kill has no memory-safety preconditions.
            Some(pid) => unsafe {
                libc::kill(pid, signal);
            },
            None => forwarding.pending = Some(signal),
        }
    }
    true
}

fn clean_up_and_die(signal: libc::c_int) -> ! {
    EXITING.store(true, Ordering::SeqCst);
    let entries: Vec<Arc<Entry>> = lock(&ENTRIES).values().rev().cloned().collect();
    if !entries.is_empty() {
        complain(&format!(
            "{}, cleaning up, please wait",
            signal_name(signal)
        ));
    }
    // Let the steps under way finish, so nothing is made after its undo.
    let deadline = Instant::now() + STEP_WAIT;
    let _all_steps = loop {
        match STEPS.try_write() {
            Ok(guard) => break Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => break Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => break None,
        }
    };
    for entry in entries {
        // A panicking undo must not keep the others from running, nor the
        // process from ending.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_entry(&entry))) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => complain(&format!("removing {}: {err}", entry.what)),
            Err(_) => complain(&format!("removing {}: the cleanup panicked", entry.what)),
        }
    }
    // SAFETY: restoring the default action and raising the signal ends the
    // process the way the signal would have.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "interrupted (SIGINT)",
        libc::SIGTERM => "terminated (SIGTERM)",
        libc::SIGHUP => "hung up (SIGHUP)",
        _ => "signalled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_runs_once_whoever_runs_it() {
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        let cleanup = Cleanup::register("a counter", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let entry = Arc::clone(&cleanup.entry);
        run_entry(&entry).unwrap();
        drop(cleanup);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(lock(&ENTRIES).values().all(|e| !Arc::ptr_eq(e, &entry)));
    }

    #[test]
    fn forgotten_undo_never_runs() {
        let cleanup = Cleanup::register("nothing", || panic!("undone"));
        cleanup.forget();
    }

    #[test]
    fn steps_nest() {
        assert_eq!(making(|| making(|| 7)), 7);
    }

    #[test]
    fn exit_status_as_a_shell_says_it() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(shell_status(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(
            shell_status(std::process::ExitStatus::from_raw(libc::SIGTERM)),
            143
        );
    }
}
