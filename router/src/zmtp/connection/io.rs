//! The traffic phase of a connection: [`Reader`] and [`Writer`], both
//! driven by `connection::run` in one task.

use std::collections::HashSet;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{QueueRx, Queued, Role, SocketCore, Stop};
use crate::zmtp::command::Command;
use crate::zmtp::curve::Sealer;
use crate::zmtp::frame::{
    Decode, Inbound, Multipart, encode_command, encode_frame_header, encode_message,
};
use crate::zmtp::options::Options;
use crate::zmtp::subscriptions::SubscriptionSet;

/// Messages handed to the role at once / taken from a queue per write.
const BATCH: usize = 512;
/// Smallest read: one syscall brings up to this much.
const READ_CHUNK: usize = 64 * 1024;
/// Frame bodies at least this big are written from their own buffer
/// (vectored) instead of being copied into the batch buffer.
const LARGE_BODY: usize = 8 * 1024;
/// IoSlices per vectored write call.
const MAX_IOV: usize = 64;

/// Why the traffic phase ended.
#[derive(Debug)]
pub(super) enum End {
    /// Closed by us (socket closed, slow subscriber, role dropped the queue).
    Cancelled,
    /// A protocol violation, with its bounded reason.
    Protocol(&'static str),
    /// The connection ended for this reason.
    Disconnect(&'static str),
}

/// Liveness shared by a connection's reader and writer.
#[derive(Clone, Debug)]
pub(super) struct Heartbeat {
    base: Instant,
    last_rx_ms: Arc<AtomicU64>,
    /// Set while the reader waits on the role: the peer is evidently alive.
    busy: Arc<AtomicBool>,
    interval: Duration,
    timeout: Duration,
}

impl Heartbeat {
    pub(super) fn new(options: &Options) -> Self {
        Self {
            base: Instant::now(),
            last_rx_ms: Arc::new(AtomicU64::new(0)),
            busy: Arc::new(AtomicBool::new(false)),
            interval: options.heartbeat_interval,
            timeout: options.heartbeat_timeout.max(options.heartbeat_interval),
        }
    }

    #[inline]
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_rx_ms.store(ms, Ordering::Relaxed);
    }

    fn is_dead(&self) -> bool {
        if self.busy.load(Ordering::Relaxed) {
            return false;
        }
        let last = Duration::from_millis(self.last_rx_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last) > self.timeout
    }

    fn ping(&self) -> Command {
        let ds = self.timeout.as_millis() / 100;
        Command::Ping {
            ttl_deciseconds: u16::try_from(ds).unwrap_or(u16::MAX),
            context: Bytes::new(),
        }
    }
}

/// Ends the connection once a heartbeating peer has been silent for the
/// heartbeat timeout (never, without heartbeats).
pub(super) async fn watchdog(heartbeat: Option<Heartbeat>) -> End {
    let Some(h) = heartbeat else {
        return std::future::pending().await;
    };
    let period = (h.timeout / 4).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(period).await;
        if h.is_dead() {
            return End::Disconnect("heartbeat_timeout");
        }
    }
}

/// Decodes what the peer sends and hands it to the role; `D` is the plain
/// or the CURVE decoder.
pub(super) struct Reader<D> {
    buf: BytesMut,
    decoder: D,
    ctrl: mpsc::Sender<Command>,
    heartbeat: Option<Heartbeat>,
    batch: Vec<Multipart>,
    max_reserve: usize,
    messages_in: IntCounter,
}

impl<D: Decode> Reader<D> {
    pub(super) fn new(
        core: &SocketCore,
        leftover: BytesMut,
        ctrl: mpsc::Sender<Command>,
        heartbeat: Option<Heartbeat>,
        decoder: D,
    ) -> Self {
        let limits = &core.options.limits;
        if let Some(h) = &heartbeat {
            h.touch();
        }
        Self {
            buf: leftover,
            decoder,
            ctrl,
            heartbeat,
            batch: Vec::new(),
            max_reserve: limits
                .max_message_size
                .max(limits.max_frame_size)
                .max(limits.max_command_size)
                .clamp(READ_CHUNK, 64 << 20),
            messages_in: core.metrics.messages_in.clone(),
        }
    }

    async fn deliver<R: Role>(&mut self, role: &R, state: &mut R::Peer) -> Result<(), End> {
        let n = self.batch.len() as u64;
        if let Some(h) = &self.heartbeat {
            h.busy.store(true, Ordering::Relaxed);
        }
        let r = role.deliver(state, &mut self.batch).await;
        if let Some(h) = &self.heartbeat {
            h.busy.store(false, Ordering::Relaxed);
            h.touch();
        }
        self.batch.clear();
        match r {
            Ok(()) => {
                self.messages_in.inc_by(n);
                Ok(())
            }
            Err(Stop::Protocol(reason)) => Err(End::Protocol(reason)),
            Err(Stop::SocketClosed) => Err(End::Cancelled),
        }
    }

    fn command<R: Role>(&mut self, role: &R, state: &mut R::Peer, cmd: Command) -> Result<(), End> {
        match cmd {
            Command::Ping { context, .. } => {
                // A full control queue means the peer floods PINGs; losing a
                // PONG is then harmless.
                let _ = self.ctrl.try_send(Command::Pong { context });
                Ok(())
            }
            Command::Pong { .. } | Command::Unknown { .. } => Ok(()),
            Command::Error { .. } => Err(End::Disconnect("peer_error")),
            Command::Subscribe(_) | Command::Cancel(_) => match role.command(state, cmd) {
                Ok(()) => Ok(()),
                Err(Stop::Protocol(reason)) => Err(End::Protocol(reason)),
                Err(Stop::SocketClosed) => Err(End::Cancelled),
            },
            Command::Ready(_) | Command::Hello { .. } | Command::Welcome | Command::Initiate(_) => {
                Err(End::Protocol("unexpected_command"))
            }
        }
    }

    /// Reads and dispatches until the connection ends.
    pub(super) async fn run<R: Role>(
        &mut self,
        mut rd: ReadHalf<'_>,
        role: &R,
        state: &mut R::Peer,
    ) -> End {
        loop {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(Inbound::Message(m))) => {
                        self.batch.push(m);
                        if self.batch.len() >= BATCH
                            && let Err(end) = self.deliver(role, state).await
                        {
                            return end;
                        }
                    }
                    Ok(Some(Inbound::Command(c))) => {
                        // Keep the peer's order between messages and commands.
                        if !self.batch.is_empty()
                            && let Err(end) = self.deliver(role, state).await
                        {
                            return end;
                        }
                        if let Err(end) = self.command(role, state, c) {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Protocol(e.reason()),
                }
            }
            if !self.batch.is_empty()
                && let Err(end) = self.deliver(role, state).await
            {
                return end;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 16 {
                // Bounded by the configured limits, never by a size the peer
                // declared (the decoder rejects those on the header).
                let want = self.decoder.wanted().clamp(READ_CHUNK, self.max_reserve);
                self.buf.reserve(want);
            }
            match rd.read_buf(&mut self.buf).await {
                Ok(0) => return End::Disconnect("peer_closed"),
                Ok(_) => {
                    if let Some(h) = &self.heartbeat {
                        h.touch();
                    }
                }
                Err(_) => return End::Disconnect("io_error"),
            }
        }
    }
}

/// Keeps a publisher's view of our subscriptions in sync.
struct SubSync {
    set: Arc<SubscriptionSet>,
    changed: watch::Receiver<()>,
    sent: HashSet<Bytes>,
    /// ZMTP 3.1 peer: SUBSCRIBE/CANCEL commands; 3.0: 0x01/0x00 messages.
    commands: bool,
}

/// Drains the peer's queue and control messages onto the socket.
pub(super) struct Writer {
    queue: Option<QueueRx>,
    ctrl: mpsc::Receiver<Command>,
    subs: Option<SubSync>,
    heartbeat: Option<Heartbeat>,
    tick: Option<Interval>,
    /// Messages of the batch being written (kept until written, so the
    /// unwritten ones can be handed back).
    batch: Vec<Queued>,
    batch_bytes: usize,
    /// Stream offset at which each batch message ends.
    ends: Vec<usize>,
    /// Bytes of the current flush already accepted by the kernel.
    written: usize,
    out: BytesMut,
    segs: Vec<Bytes>,
    /// Bytes encoded for the current flush (segs + out).
    encoded: usize,
    core: Arc<SocketCore>,
    messages_out: IntCounter,
    /// CURVE: seals every frame; `None` for NULL and PLAIN (checked once
    /// per batch, not per frame).
    sealer: Option<Sealer>,
}

enum Event {
    Control(Option<Command>),
    Subscriptions,
    Tick,
    Batch(usize),
}

async fn next_batch(queue: &mut Option<QueueRx>, batch: &mut Vec<Queued>) -> usize {
    match queue {
        Some(q) => q.rx.recv_many(batch, BATCH).await,
        None => std::future::pending().await,
    }
}

async fn subs_changed(subs: &mut Option<SubSync>) {
    match subs {
        Some(s) => {
            if s.changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Writer {
    pub(super) fn new(
        core: &Arc<SocketCore>,
        queue: Option<QueueRx>,
        ctrl: mpsc::Receiver<Command>,
        subs: Option<(Arc<SubscriptionSet>, bool)>,
        heartbeat: Option<Heartbeat>,
        sealer: Option<Sealer>,
    ) -> Self {
        let tick = heartbeat.as_ref().map(|h| {
            let mut t = tokio::time::interval_at(Instant::now() + h.interval, h.interval);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        Self {
            queue,
            ctrl,
            subs: subs.map(|(set, commands)| SubSync {
                changed: set.watch(),
                set,
                sent: HashSet::new(),
                commands,
            }),
            heartbeat,
            tick,
            batch: Vec::new(),
            batch_bytes: 0,
            ends: Vec::new(),
            written: 0,
            out: BytesMut::with_capacity(256),
            segs: Vec::new(),
            encoded: 0,
            core: core.clone(),
            messages_out: core.metrics.messages_out.clone(),
            sealer,
        }
    }

    /// Messages taken from the queue but not completely written, followed by
    /// the messages still queued. Call after the connection ended.
    pub(super) fn into_unsent(mut self) -> Vec<Queued> {
        let written = self.written;
        let mut unsent: Vec<Queued> = self
            .batch
            .drain(..)
            .zip(
                self.ends
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(usize::MAX)),
            )
            .filter_map(|(mut m, end)| {
                if end > written {
                    return Some(m);
                }
                // Wholly written before the connection ended.
                if let Some(token) = m.token.take() {
                    token.written();
                }
                None
            })
            .collect();
        if let Some(mut q) = self.queue.take() {
            q.rx.close();
            while let Ok(m) = q.rx.try_recv() {
                unsent.push(m);
            }
            q.bytes.store(0, Ordering::Relaxed);
        }
        unsent
    }

    /// Writes until the connection ends.
    pub(super) async fn run(&mut self, mut wr: WriteHalf<'_>) -> End {
        loop {
            let ev = tokio::select! {
                biased;
                c = self.ctrl.recv() => Event::Control(c),
                () = subs_changed(&mut self.subs) => Event::Subscriptions,
                () = tick(&mut self.tick) => Event::Tick,
                n = next_batch(&mut self.queue, &mut self.batch) => Event::Batch(n),
            };
            match ev {
                Event::Control(Some(cmd)) => self.push_command(&cmd),
                Event::Control(None) => return End::Cancelled,
                Event::Subscriptions => self.sync_subscriptions(),
                Event::Tick => {
                    if let Some(h) = &self.heartbeat {
                        let ping = h.ping();
                        self.push_command(&ping);
                    }
                }
                Event::Batch(0) => return End::Cancelled,
                Event::Batch(_) => self.encode_batch(),
            }
            // Piggy-back pending control messages on this write.
            while let Ok(cmd) = self.ctrl.try_recv() {
                self.push_command(&cmd);
            }
            if self.sealer.as_ref().is_some_and(Sealer::exhausted) {
                return End::Disconnect("curve_nonces_exhausted");
            }
            if let Err(_e) = self.flush(&mut wr).await {
                return End::Disconnect("io_error");
            }
        }
    }

    fn push_command(&mut self, cmd: &Command) {
        let before = self.out.len();
        match &mut self.sealer {
            None => encode_command(cmd, &mut self.out),
            Some(s) => s.seal_command(cmd, &mut self.out),
        }
        self.encoded += self.out.len() - before;
    }

    fn sync_subscriptions(&mut self) {
        let Some(s) = &mut self.subs else { return };
        s.changed.borrow_and_update();
        let want: HashSet<Bytes> = s.set.prefixes().into_iter().collect();
        let before = self.out.len();
        for gone in s.sent.difference(&want) {
            encode_subscription(&mut self.out, self.sealer.as_mut(), s.commands, false, gone);
        }
        for new in want.difference(&s.sent) {
            encode_subscription(&mut self.out, self.sealer.as_mut(), s.commands, true, new);
        }
        s.sent = want;
        self.encoded += self.out.len() - before;
    }

    fn encode_batch(&mut self) {
        self.ends.clear();
        self.batch_bytes = 0;
        if let Some(sealer) = &mut self.sealer {
            for Queued { msg, .. } in &self.batch {
                self.batch_bytes += super::message_size(msg);
                let before = self.out.len();
                sealer.seal_message(msg, &mut self.out);
                self.encoded += self.out.len() - before;
                self.ends.push(self.encoded);
            }
            return;
        }
        for Queued { msg, .. } in &self.batch {
            self.batch_bytes += super::message_size(msg);
            let before = self.out.len();
            if msg.iter().all(|f| f.len() < LARGE_BODY) {
                encode_message(msg, &mut self.out);
                self.encoded += self.out.len() - before;
            } else {
                let last = msg.len().saturating_sub(1);
                for (i, frame) in msg.iter().enumerate() {
                    let before = self.out.len();
                    encode_frame_header(i < last, frame.len(), &mut self.out);
                    self.encoded += self.out.len() - before;
                    if frame.len() >= LARGE_BODY {
                        self.segs.push(self.out.split().freeze());
                        self.segs.push(frame.clone());
                    } else {
                        self.out.extend_from_slice(frame);
                    }
                    self.encoded += frame.len();
                }
            }
            self.ends.push(self.encoded);
        }
    }

    async fn flush(&mut self, wr: &mut WriteHalf<'_>) -> std::io::Result<()> {
        if self.segs.is_empty() {
            let mut pos = 0;
            while pos < self.out.len() {
                let n = wr.write(&self.out[pos..]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                pos += n;
                self.written += n;
            }
        } else {
            if !self.out.is_empty() {
                self.segs.push(self.out.split().freeze());
            }
            let (mut idx, mut off) = (0, 0);
            while idx < self.segs.len() {
                let mut n = {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    let mut k = 0;
                    for (j, seg) in self.segs[idx..].iter().take(MAX_IOV).enumerate() {
                        iov[k] = IoSlice::new(if j == 0 { &seg[off..] } else { &seg[..] });
                        k += 1;
                    }
                    wr.write_vectored(&iov[..k]).await?
                };
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                self.written += n;
                while n > 0 {
                    let rest = self.segs[idx].len() - off;
                    if n >= rest {
                        n -= rest;
                        idx += 1;
                        off = 0;
                    } else {
                        off += n;
                        n = 0;
                    }
                }
            }
            self.segs.clear();
        }
        self.out.clear();
        self.encoded = 0;
        self.written = 0;
        self.ends.clear();
        if !self.batch.is_empty() {
            self.messages_out.inc_by(self.batch.len() as u64);
            if let Some(q) = &self.queue {
                q.bytes.fetch_sub(self.batch_bytes, Ordering::Relaxed);
            }
            for token in self.batch.iter_mut().filter_map(|q| q.token.take()) {
                token.written();
            }
            self.batch.clear();
            self.batch_bytes = 0;
            self.core.room.freed();
        }
        Ok(())
    }
}

fn encode_subscription(
    out: &mut BytesMut,
    sealer: Option<&mut Sealer>,
    commands: bool,
    subscribe: bool,
    prefix: &Bytes,
) {
    if commands {
        let cmd = if subscribe {
            Command::Subscribe(prefix.clone())
        } else {
            Command::Cancel(prefix.clone())
        };
        match sealer {
            None => encode_command(&cmd, out),
            Some(s) => s.seal_command(&cmd, out),
        }
    } else if let Some(s) = sealer {
        s.seal_frame(false, &[&[u8::from(subscribe)], prefix], out);
    } else {
        encode_frame_header(false, prefix.len() + 1, out);
        out.put_u8(u8::from(subscribe));
        out.extend_from_slice(prefix);
    }
}
