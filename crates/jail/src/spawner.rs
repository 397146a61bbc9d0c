//! A dedicated long-lived spawner thread, because `PR_SET_PDEATHSIG` fires when the *thread* that created
//! the child exits. Every sandbox spawned through a [`Spawner`] is SIGKILLed when the spawner is dropped
//! (its thread ends) or the process dies.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::{spawn, JailError, SandboxSpec, Sandboxed};

type Request = (SandboxSpec, mpsc::Sender<Result<Sandboxed, JailError>>);

/// Owns the thread that performs every spawn.
pub struct Spawner {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    /// Start the spawner thread.
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("jail-spawner".into())
            .spawn(move || {
                for (spec, reply) in rx {
                    let r = spawn(&spec);
                    drop(spec);
                    let _ = reply.send(r);
                }
            })?;
        Ok(Spawner {
            tx: Mutex::new(Some(tx)),
            thread: Some(thread),
        })
    }

    /// Spawn on the spawner thread (blocking the caller until the sandbox is confirmed). The spec, including
    /// its passed fds, is dropped after the spawn.
    pub fn spawn(&self, spec: SandboxSpec) -> Result<Sandboxed, JailError> {
        let (rtx, rrx) = mpsc::channel();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let tx = tx.ok_or_else(|| JailError::Setup("spawner stopped".into()))?;
        tx.send((spec, rtx))
            .map_err(|_| JailError::Setup("spawner thread gone".into()))?;
        rrx.recv()
            .map_err(|_| JailError::Setup("spawner thread gone".into()))?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
