use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use oasis::sandbox::{ManagerConfig, Progress, Sandbox, SessionManager};

/// Where the runtime and compiled modules are cached across test runs.
pub fn data_dir() -> PathBuf {
    std::env::var_os("OASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oasis-data"))
}

/// The sandbox every test shares (one engine, images compiled once).
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let sb = Sandbox::open(&data_dir(), Progress::stderr()).expect(
                "the runtime can be provisioned (python3 + pip + network, or OASIS_RUNTIME_DIR)",
            );
            sb.image("scientific")
                .expect("the scientific image compiles");
            Arc::new(sb)
        })
        .clone()
}

/// A session manager over a fresh temporary root.
pub struct Sessions {
    pub manager: SessionManager,
    pub _root: tempfile::TempDir,
}

pub async fn sessions(config: ManagerConfig) -> Sessions {
    let sb = tokio::task::spawn_blocking(sandbox).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    Sessions {
        manager: SessionManager::new(sb, root.path().join("sessions"), config),
        _root: root,
    }
}

pub const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
