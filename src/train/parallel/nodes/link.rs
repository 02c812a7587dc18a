//! A worker's connection to the orchestrator.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::hello::Hello;
use super::wire::{Frame, encode_values, read_frame, write_encoded, write_frame};
use crate::error::{Error, Result};

/// How much longer than the orchestrator a worker waits for the run to start or for a
/// reduction's result.
const RESULT_GRACE: Duration = Duration::from_secs(5);

/// A joined worker's line to the orchestrator: reductions in the same order on every worker.
#[derive(Debug)]
pub struct NodeLink {
    stream: TcpStream,
    hello: Hello,
    timeout: Duration,
    seq: u64,
}

impl NodeLink {
    /// Connects to the orchestrator at `address` (`HOST:PORT`), retrying until `timeout`
    /// (it may not have started yet), introduces itself with `hello` and waits (up to
    /// `timeout` as well) until every worker of the run has joined and agrees.
    ///
    /// Errors: [`Error::Orchestrator`] when it cannot be reached, [`Error::NodesDisagree`]
    /// when the workers differ (the reason names the first difference),
    /// [`Error::PeerTimeout`] when the others do not all join in time.
    pub fn join(address: &str, hello: Hello, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let mut stream = connect(address, deadline, timeout)?;
        let unreachable = |e: std::io::Error| Error::Orchestrator {
            address: address.to_owned(),
            reason: e.to_string(),
        };
        let json = serde_json::to_vec(&hello).expect("a hello serializes");
        write_frame(&mut stream, &Frame::Hello(json)).map_err(unreachable)?;
        // The others may start later: wait for them as long as the orchestrator does, and a
        // little longer, so that its word on who is missing arrives first.
        let wait = deadline.saturating_duration_since(Instant::now()) + RESULT_GRACE;
        stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(unreachable)?;
        let what = "joining the other nodes";
        match read_frame(&mut stream, 0) {
            Ok(Frame::Welcome) => {}
            Ok(Frame::Refused(reason)) => return Err(Error::NodesDisagree(reason)),
            Ok(other) => {
                return Err(Error::Collective {
                    what,
                    reason: format!("the orchestrator answered {other:?}"),
                });
            }
            Err(e) => return Err(wait_failed(what, &hello, &e, timeout)),
        }
        Ok(NodeLink {
            stream,
            hello,
            timeout,
            seq: 0,
        })
    }

    /// Joins every worker of this node at once (each waits for all the others, its node's
    /// included), one `hello` each; the links in the hellos' order. Returns at the first
    /// error (the workers still waiting give up at their own timeout).
    pub fn join_all(address: &str, hellos: Vec<Hello>, timeout: Duration) -> Result<Vec<Self>> {
        let count = hellos.len();
        let (sender, joined) = std::sync::mpsc::channel();
        for (at, hello) in hellos.into_iter().enumerate() {
            let (sender, address) = (sender.clone(), address.to_owned());
            std::thread::spawn(move || {
                let _ = sender.send((at, NodeLink::join(&address, hello, timeout)));
            });
        }
        drop(sender);
        let mut links: Vec<Option<NodeLink>> = (0..count).map(|_| None).collect();
        for _ in 0..count {
            let (at, link) = joined
                .recv()
                .map_err(|_| Error::WorkerPanicked { rank: 0 })?;
            match link {
                Ok(link) => links[at] = Some(link),
                Err(error) => return Err(reason_of_refusal(&joined).unwrap_or(error)),
            }
        }
        Ok(links
            .into_iter()
            .map(|link| link.expect("every worker answered"))
            .collect())
    }

    /// The mean over the nodes of one vector per node: this worker passes its node's vector
    /// (`None` from every worker but one per node, which then only waits for the result).
    /// Every worker of the run gets the same values back.
    pub fn mean(&mut self, what: &'static str, values: Option<&[f32]>) -> Result<Vec<f32>> {
        let seq = self.seq;
        self.seq += 1;
        let frame = encode_values(seq, values);
        // Bounded writes and reads: a dead orchestrator fails the run, never hangs it. The
        // read waits a little longer than the orchestrator waits for a late worker, so that
        // its message naming that worker arrives first.
        let stream = &mut self.stream;
        let setup = stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| stream.set_read_timeout(Some(self.timeout + RESULT_GRACE)));
        setup
            .and_then(|()| write_encoded(stream, &frame))
            .map_err(|e| wait_failed(what, &self.hello, &e, self.timeout))?;
        match read_frame(stream, self.hello.max_values) {
            Ok(Frame::Values {
                seq: s,
                values: Some(values),
            }) if s == seq => Ok(values),
            Ok(Frame::Refused(reason)) => Err(Error::Collective { what, reason }),
            Ok(other) => Err(Error::Collective {
                what,
                reason: format!("the orchestrator answered {other:?} out of step"),
            }),
            Err(e) => Err(wait_failed(what, &self.hello, &e, self.timeout)),
        }
    }

    /// Tells the orchestrator this worker is done (best effort: the run's result is in).
    pub fn leave(&mut self) {
        let _ = write_frame(&mut self.stream, &Frame::Leave);
    }
}

/// The orchestrator's reason when another worker of this node was refused about now: a
/// refusal closes the orchestrator, so a worker that had just connected sees only a closed
/// connection, while its sibling got the reason.
fn reason_of_refusal(joined: &Receiver<(usize, Result<NodeLink>)>) -> Option<Error> {
    let until = Instant::now() + RESULT_GRACE;
    loop {
        let wait = until.saturating_duration_since(Instant::now());
        if let (_, Err(refused @ Error::NodesDisagree(_))) = joined.recv_timeout(wait).ok()? {
            return Some(refused);
        }
    }
}

/// Connects to the first address `address` resolves to, retrying until `deadline`.
fn connect(address: &str, deadline: Instant, timeout: Duration) -> Result<TcpStream> {
    let unreachable = |reason: String| Error::Orchestrator {
        address: address.to_owned(),
        reason,
    };
    let resolved: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("not a HOST:PORT address ({e})")))?
        .collect();
    let first = *resolved
        .first()
        .ok_or_else(|| unreachable("resolves to no address".into()))?;
    loop {
        match TcpStream::connect_timeout(&first, Duration::from_secs(2)) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(unreachable(format!(
                    "no answer within {} s ({e})",
                    timeout.as_secs_f64()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The error of a wait on the orchestrator that failed.
fn wait_failed(
    what: &'static str,
    hello: &Hello,
    error: &std::io::Error,
    timeout: Duration,
) -> Error {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::PeerTimeout {
            what,
            rank: hello.node_rank * hello.devices + hello.local_rank,
            seconds: timeout.as_secs_f64(),
        },
        _ => Error::Collective {
            what,
            reason: format!("the orchestrator was lost ({error})"),
        },
    }
}
