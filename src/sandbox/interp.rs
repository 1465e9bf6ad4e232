//! One live CPython interpreter: a wasmtime `Store` and its instance, driven through the
//! runtime's `turn` export.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wasmtime::{Global, Instance, Memory, Store, TypedFunc, UpdateDeadline, Val, ValType};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::hibernate::{self, GlobalKind, HostState, SavedGlobal};
use super::wasi::{DiskQuota, Door, MemoryLimiter, OutputSink, State, StreamKind};
use super::{LoadedImage, SessionDirs};

/// Guest paths.
pub const GUEST_DATA: &str = "/mnt/data";
const GUEST_STDLIB: &str = "/usr/local/lib";
const GUEST_TMP: &str = "/tmp";
const GUEST_HOME: &str = "/tmp/home";

/// How a turn ended, seen from the host.
#[derive(Debug)]
pub enum TurnEnd {
    /// `turn` returned this status (0..=255, or 256+n after `exit()`).
    Returned(i32),
    /// The deadline passed (epoch interruption, or the call was dropped while blocked).
    Deadline,
    /// The host cancelled the call.
    Cancelled,
    /// `os._exit(n)` / `proc_exit`.
    Exited(i32),
    /// Any other trap.
    Trapped(String),
}

/// Per-call controls the epoch callback reads.
#[derive(Debug, Clone)]
pub struct Clock {
    pub deadline: Instant,
    pub cancel: CancellationToken,
}

pub struct Interpreter {
    store: Store<State>,
    memory: Memory,
    /// The mutable globals the image exports for hibernation, by export name.
    globals: Vec<(String, Global)>,
    /// The guest's monotonic clock (it goes on from where a hibernated state left it).
    monotonic: MonoClock,
    turn: TypedFunc<(i32, i32), i32>,
    alloc: TypedFunc<i32, i32>,
    pub stdout: OutputSink,
    pub stderr: OutputSink,
    /// Our helper module is installed (first call done).
    pub installed: bool,
    /// The helper hooks figure creation, so the post-turn hook runs only after a figure opened.
    pub figures_hooked: bool,
    /// Per-call deadline and cancel flag, shared with the epoch callback.
    clock: Arc<std::sync::Mutex<Clock>>,
    /// The plain binary's constructors (run once by [`Self::start`], never on a resume).
    init: Option<TypedFunc<(), ()>>,
}

/// The guest's monotonic clock: nanoseconds since the interpreter first started, carried over
/// a hibernation (wasmtime-wasi's own starts at zero with each instance).
#[derive(Debug, Clone, Copy)]
struct MonoClock {
    start: Instant,
    offset: u64,
}

impl MonoClock {
    fn now_ns(&self) -> u64 {
        self.offset
            .saturating_add(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

impl wasmtime_wasi::HostMonotonicClock for MonoClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.now_ns()
    }
}

impl Interpreter {
    /// Instantiate the image with `dirs` mounted, as a new interpreter: `/tmp` is emptied
    /// first.
    pub async fn start(
        image: &LoadedImage,
        dirs: &SessionDirs,
        memory_bytes: u64,
    ) -> anyhow::Result<Interpreter> {
        reset_tmp(dirs, &image.image.env)?;
        let mut interp = Self::instantiate(image, dirs, memory_bytes, 0).await?;
        // The plain (non-snapshot) binary needs its constructors run once.
        if let Some(init) = interp.init.clone() {
            init.call_async(&mut interp.store, ()).await?;
        }
        Ok(interp)
    }

    /// Bring back a hibernated interpreter: a fresh instance of the image with the state's
    /// memory, globals and host flags applied. `/tmp` is kept as the session left it. On
    /// `Err`, nothing of the state was kept: start a new interpreter instead.
    pub async fn resume(
        image: &LoadedImage,
        dirs: &SessionDirs,
        memory_bytes: u64,
        state: &hibernate::Parsed<'_>,
        timings: &mut hibernate::ResumeTimings,
    ) -> Result<Interpreter, hibernate::Refused> {
        let internal = |e: anyhow::Error| hibernate::Refused(format!("{e:#}"));
        let started = Instant::now();
        for d in [&dirs.data, &dirs.tmp.join("home")] {
            std::fs::create_dir_all(d)
                .map_err(|e| hibernate::Refused(format!("creating {}: {e}", d.display())))?;
        }
        let host = state.host();
        let mut interp = Self::instantiate(image, dirs, memory_bytes, host.monotonic_ns)
            .await
            .map_err(internal)?;
        let instantiated = Instant::now();
        timings.instantiate = instantiated - started;
        let have = interp.memory.data_size(&interp.store) as u64;
        let want = state.memory_bytes();
        if want < have {
            return Err(hibernate::Refused(
                "its memory is smaller than the image's".into(),
            ));
        }
        if want > have {
            interp
                .memory
                .grow(&mut interp.store, (want - have) / 65536)
                .map_err(|_| {
                    hibernate::Refused(format!(
                        "its memory ({} MiB) does not fit the session's memory limit",
                        want >> 20
                    ))
                })?;
        }
        state.apply(interp.memory.data_mut(&mut interp.store))?;
        if state.globals().len() != interp.globals.len() {
            return Err(hibernate::Refused("its globals are not the image's".into()));
        }
        for saved in state.globals() {
            let Some((_, g)) = interp.globals.iter().find(|(n, _)| *n == saved.name) else {
                return Err(hibernate::Refused(format!(
                    "it sets a global the image does not have ({})",
                    saved.name
                )));
            };
            let val = match (g.ty(&interp.store).content(), saved.kind) {
                (ValType::I32, GlobalKind::I32) => Val::I32(saved.bits as u32 as i32),
                (ValType::I64, GlobalKind::I64) => Val::I64(saved.bits as i64),
                (ValType::F32, GlobalKind::F32) => Val::F32(saved.bits as u32),
                (ValType::F64, GlobalKind::F64) => Val::F64(saved.bits),
                _ => {
                    return Err(hibernate::Refused(format!(
                        "its global {} has another type",
                        saved.name
                    )));
                }
            };
            g.set(&mut interp.store, val)
                .map_err(|e| hibernate::Refused(format!("setting {}: {e}", saved.name)))?;
        }
        interp.installed = host.installed;
        interp.figures_hooked = host.figures_hooked;
        timings.apply = instantiated.elapsed();
        Ok(interp)
    }

    /// This interpreter's state, to be written and resumed later: call it between turns only.
    /// With `pagemap` (the image passed [`hibernate::pagemap_probe`]), chunks the kernel shows
    /// untouched are not compared.
    pub fn hibernate(
        &mut self,
        key: &str,
        base: &[u8],
        pagemap: bool,
    ) -> anyhow::Result<hibernate::Encoded> {
        let mut globals = vec![];
        for (name, g) in &self.globals {
            let (kind, bits) = match g.get(&mut self.store) {
                Val::I32(v) => (GlobalKind::I32, v as u32 as u64),
                Val::I64(v) => (GlobalKind::I64, v as u64),
                Val::F32(v) => (GlobalKind::F32, v as u64),
                Val::F64(v) => (GlobalKind::F64, v),
                other => anyhow::bail!("global {name} holds a {other:?}, which cannot be saved"),
            };
            globals.push(SavedGlobal {
                name: name.clone(),
                kind,
                bits,
            });
        }
        let host = HostState {
            installed: self.installed,
            figures_hooked: self.figures_hooked,
            monotonic_ns: self.monotonic.now_ns(),
        };
        let memory = self.memory.data(&self.store);
        let started = Instant::now();
        let clean = if pagemap {
            hibernate::clean_chunks(memory)
        } else {
            None
        };
        let pagemap_time = started.elapsed();
        let mut encoded = hibernate::encode(key, memory, base, clean.as_deref(), globals, host)?;
        encoded.timings.diff += pagemap_time;
        Ok(encoded)
    }

    /// A copy of the instance's linear memory (the image's fresh memory, before any turn).
    pub fn memory_copy(&self) -> Vec<u8> {
        self.memory.data(&self.store).to_vec()
    }

    /// Whether the kernel's pagemap tells this instance's written pages from the image's
    /// ([`hibernate::pagemap_probe`]). Changes a byte of memory: only for a scratch instance.
    pub fn pagemap_probe(&mut self) -> bool {
        hibernate::pagemap_probe(self.memory.data_mut(&mut self.store))
    }

    /// A fresh instance of the image over `dirs` (which must exist), its monotonic clock
    /// starting at `monotonic_ns`; no code of the guest has run.
    pub async fn instantiate(
        image: &LoadedImage,
        dirs: &SessionDirs,
        memory_bytes: u64,
        monotonic_ns: u64,
    ) -> anyhow::Result<Interpreter> {
        let monotonic = MonoClock {
            start: Instant::now(),
            offset: monotonic_ns,
        };
        let stdout = OutputSink::new(StreamKind::Stdout);
        let stderr = OutputSink::new(StreamKind::Stderr);
        let mut b = WasiCtxBuilder::new();
        let mut env: Vec<(String, String)> = vec![
            ("HOME".into(), GUEST_HOME.into()),
            ("PYTHONTZPATH".into(), String::new()),
            ("TMPDIR".into(), GUEST_TMP.into()),
        ];
        for (k, v) in &image.image.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env.sort();
        b.args(&["/usr/local/bin/python.wasm"])
            .envs(&env)
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
                Vec::<u8>::new(),
            ))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .monotonic_clock(monotonic);
        let rt = &image.runtime;
        b.preopened_dir(rt.stdlib_dir(), GUEST_STDLIB, FsPerms::ReadOnly)?;
        b.preopened_dir(
            rt.mpl_data_dir(),
            format!(
                "{GUEST_STDLIB}/{}/matplotlib/mpl-data",
                rt.stdlib_zip_name()
            ),
            FsPerms::ReadOnly,
        )?;
        b.preopened_dir(&dirs.data, GUEST_DATA, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("mounting {}", dirs.data.display()))?;
        b.preopened_dir(&dirs.tmp, GUEST_TMP, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("mounting {}", dirs.tmp.display()))?;

        let state = State {
            wasi: b.build_p1(),
            limiter: MemoryLimiter {
                max_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
                hit: false,
            },
            disk: DiskQuota {
                roots: vec![dirs.data.clone(), dirs.tmp.clone()],
                max_bytes: u64::MAX,
                max_files: u64::MAX,
                used_bytes: 0,
                used_files: 0,
                hit: false,
            },
            door: Door::default(),
        };
        let mut store = Store::new(&image.engine, state);
        store.limiter(|s| &mut s.limiter);
        let clock = Arc::new(std::sync::Mutex::new(Clock {
            deadline: Instant::now() + std::time::Duration::from_secs(3600),
            cancel: CancellationToken::new(),
        }));
        let cb_clock = clock.clone();
        store.epoch_deadline_callback(move |_| {
            let c = cb_clock.lock().expect("clock lock");
            if c.cancel.is_cancelled() || Instant::now() >= c.deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
        let instance: Instance = image
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the interpreter")?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("the runtime exports no memory")?;
        let turn = instance.get_typed_func::<(i32, i32), i32>(&mut store, "turn")?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "host_alloc")?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .ok();
        let names: Vec<String> = instance
            .exports(&mut store)
            .filter(|e| e.name().starts_with(super::globals::PREFIX))
            .map(|e| e.name().to_string())
            .collect();
        let mut globals = vec![];
        for name in names {
            let g = instance
                .get_global(&mut store, &name)
                .with_context(|| format!("{name} is not a global"))?;
            globals.push((name, g));
        }
        Ok(Interpreter {
            store,
            memory,
            globals,
            monotonic,
            init,
            turn,
            alloc,
            stdout,
            stderr,
            installed: false,
            figures_hooked: false,
            clock,
        })
    }

    /// Bytes of linear memory the interpreter holds (it never shrinks).
    pub fn memory_bytes(&self) -> u64 {
        self.memory.data_size(&self.store) as u64
    }

    pub fn state(&mut self) -> &mut State {
        self.store.data_mut()
    }

    /// Run Oasis's first turn: define `_oasis` if the image does not hold it yet and install
    /// its hooks. The door stays closed meanwhile (the runtime's own first-turn setup probes
    /// it). On failure, returns how the turn ended and what it wrote to stderr.
    pub async fn install(&mut self, deadline: Instant) -> Result<(), (TurnEnd, Vec<u8>)> {
        self.set_clock(Clock {
            deadline,
            cancel: CancellationToken::new(),
        });
        let open = std::mem::replace(&mut self.state().door.open, false);
        self.stdout.reset(64 << 10, None);
        self.stderr.reset(64 << 10, None);
        let at = tokio::time::Instant::from_std(deadline);
        let end = tokio::time::timeout_at(at, self.turn(&setup_code()))
            .await
            .unwrap_or(TurnEnd::Deadline);
        let (out, _) = self.stdout.take();
        let (err, _) = self.stderr.take();
        self.state().door.open = open;
        match end {
            TurnEnd::Returned(0) => {
                self.figures_hooked = out.ends_with(b"oasis:figures-hooked\n");
                self.installed = true;
                Ok(())
            }
            other => Err((other, err)),
        }
    }

    /// The session folders were renamed: point the quota at their new place. (The mounts
    /// follow by themselves: they hold the folders open.)
    pub fn rebase(&mut self, dirs: &SessionDirs) {
        self.state().disk.roots = vec![dirs.data.clone(), dirs.tmp.clone()];
    }

    /// Take the frames the guest sent since the last take; the door stays open.
    pub fn take_door(&mut self) -> Door {
        let door = &mut self.store.data_mut().door;
        std::mem::replace(
            door,
            Door {
                open: door.open,
                ..Door::default()
            },
        )
    }

    /// Set the deadline and cancel flag for the next turns.
    pub fn set_clock(&mut self, clock: Clock) {
        *self.clock.lock().expect("clock lock") = clock;
        self.store.set_epoch_deadline(1);
    }

    /// Run one turn of `code`. Blocking waits are bounded by the caller dropping this future.
    pub async fn turn(&mut self, code: &str) -> TurnEnd {
        let len = match i32::try_from(code.len()) {
            Ok(n) => n,
            Err(_) => return TurnEnd::Trapped("code too large".into()),
        };
        let ptr = if len == 0 {
            0
        } else {
            match self.alloc.call_async(&mut self.store, len).await {
                Ok(p) => p,
                Err(e) => return self.classify(e),
            }
        };
        if ptr != 0
            && self
                .memory
                .write(&mut self.store, ptr as u32 as usize, code.as_bytes())
                .is_err()
        {
            return TurnEnd::Trapped("host_alloc returned an out-of-bounds pointer".into());
        }
        match self.turn.call_async(&mut self.store, (ptr, len)).await {
            Ok(status) => TurnEnd::Returned(status),
            Err(e) => self.classify(e),
        }
    }

    fn classify(&self, e: wasmtime::Error) -> TurnEnd {
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return TurnEnd::Exited(exit.0);
        }
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            let c = self.clock.lock().expect("clock lock");
            return if c.cancel.is_cancelled() {
                TurnEnd::Cancelled
            } else {
                TurnEnd::Deadline
            };
        }
        TurnEnd::Trapped(format!("{e:#}"))
    }
}

/// Empty the session's `/tmp` and make HOME and any `*DIR` folder the image puts under `/tmp`.
fn reset_tmp(
    dirs: &SessionDirs,
    env: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    if dirs.tmp.exists() {
        std::fs::remove_dir_all(&dirs.tmp)
            .with_context(|| format!("emptying {}", dirs.tmp.display()))?;
    }
    std::fs::create_dir_all(dirs.tmp.join("home"))
        .with_context(|| format!("creating {}", dirs.tmp.display()))?;
    std::fs::create_dir_all(&dirs.data)
        .with_context(|| format!("creating {}", dirs.data.display()))?;
    for (k, v) in env {
        if let Some(rest) = v.strip_prefix("/tmp/")
            && k.ends_with("DIR")
            && !rest.split('/').any(|c| c == ".." || c.is_empty())
        {
            std::fs::create_dir_all(dirs.tmp.join(rest))?;
        }
    }
    Ok(())
}

/// Oasis's helper module, installed in each interpreter as `_oasis` (pre-initialized images
/// already hold it; see `preinit.rs`).
pub const GUEST_HELPER: &str = include_str!("guest.py");

/// Python that defines `_oasis` from `guest.py` unless it is already there.
pub fn define_helper_code() -> String {
    let src = serde_json::to_string(GUEST_HELPER).expect("a string serializes");
    format!(
        "def __oasis_define():\n    import sys, types\n    if '_oasis' in sys.modules:\n        return\n    \
         m = types.ModuleType('_oasis')\n    exec(compile({src}, '<oasis>', 'exec'), m.__dict__)\n    \
         sys.modules['_oasis'] = m\n__oasis_define()\ndel __oasis_define\n"
    )
}

/// Code of the first turn: define `_oasis` if needed and install its hooks.
fn setup_code() -> String {
    format!("{}__import__('_oasis').install()\n", define_helper_code())
}
