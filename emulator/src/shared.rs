//! The state one emulator's handle, server and control API share: the
//! mutable [`World`] behind one mutex, and how to stop the server.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::EmulatorConfig;
use crate::accounts::Accounts;
use crate::faults::FaultQueue;
use crate::quota::Quota;
use crate::recording::RequestLog;
use crate::state::JobStore;

/// Everything mutable, behind one mutex (never held across an await).
#[derive(Default)]
pub(crate) struct World {
    pub jobs: JobStore,
    pub accounts: Accounts,
    pub requests: RequestLog,
    pub faults: FaultQueue,
    pub quota: Quota,
}

impl World {
    /// Creates a job; its region is served from then on.
    pub fn create_job(&mut self, new: crate::NewJob) -> Result<crate::CreatedJob, String> {
        let created = self.jobs.create_job(new)?;
        self.accounts.serve_region(&created.region);
        Ok(created)
    }
}

/// State shared by the handle, the accept loop and all connections.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub local_addr: SocketAddr,
    world: Mutex<World>,
    stop: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub fn new(
        config: EmulatorConfig,
        local_addr: SocketAddr,
        world: World,
        stop: watch::Sender<bool>,
    ) -> Shared {
        Shared {
            config,
            local_addr,
            world: Mutex::new(world),
            stop,
            accept_task: Mutex::new(None),
        }
    }

    pub fn set_accept_task(&self, task: JoinHandle<()>) {
        *self.accept_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Tells the accept loop to stop, without waiting for it.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock cannot leave World inconsistent in a
        // way that matters for a test double; keep serving.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting, lets in-flight requests finish (bounded), closes connections.
    pub async fn shutdown(&self) {
        self.stop();
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
