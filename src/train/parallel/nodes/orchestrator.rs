//! The orchestrator: where the workers of every node meet, are checked to agree, and have
//! their gradients averaged, step after step.
//!
//! It is a star: each worker sends its contribution and gets the mean back. The sum runs in
//! node order, so every worker gets the same bits. It runs on a thread of the node that
//! starts it and serves one run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::hello::Hello;
use super::wire::{Frame, encode, read_frame, write_encoded, write_frame};
use crate::error::{Error, Result};

/// A started orchestrator, serving on its own thread until its run ends.
///
/// Dropping it stops a run that has not started and waits (a little) for the thread to
/// finish what it is telling the workers: the process that started it must not end while
/// the other nodes are being told why their run cannot go on.
#[derive(Debug)]
pub struct Orchestrator {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    done: Receiver<()>,
}

/// The longest a dropped orchestrator waits for its thread.
const FINISHING: Duration = Duration::from_secs(10);

impl Orchestrator {
    /// Listens on `port` of every interface (0: any free port) and serves the first run
    /// whose workers all join within `timeout` of the first one; every later wait on a
    /// worker is bounded by `timeout` too. A port in use is [`Error::PortInUse`].
    pub fn start(port: u16, timeout: Duration) -> Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => Error::PortInUse { port },
            _ => Error::Orchestrator {
                address: format!("0.0.0.0:{port}"),
                reason: e.to_string(),
            },
        })?;
        let address = listener.local_addr().map_err(|e| Error::Orchestrator {
            address: format!("0.0.0.0:{port}"),
            reason: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (finished, done) = channel();
        let stopped = stop.clone();
        std::thread::spawn(move || {
            serve(listener, timeout, &stopped);
            let _ = finished.send(());
        });
        Ok(Orchestrator {
            address,
            stop,
            done,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.done.recv_timeout(FINISHING);
    }
}

/// A joined worker.
struct Worker {
    hello: Hello,
    stream: TcpStream,
}

fn serve(listener: TcpListener, timeout: Duration, stop: &AtomicBool) {
    let Some(mut workers) = join(&listener, timeout, stop) else {
        return;
    };
    drop(listener);
    for worker in &mut workers {
        let _ = worker.stream.set_read_timeout(Some(timeout));
        let _ = worker.stream.set_write_timeout(Some(timeout));
    }
    if broadcast(&mut workers, &Frame::Welcome).is_ok() {
        reduce_until_all_leave(&mut workers, timeout);
    }
}

/// Accepts workers until the run is complete, in rank order; `None` when the run cannot
/// start (a disagreement or a timeout: the joined workers are told why).
///
/// The wait for the others starts at the first worker's hello: the first is one of the
/// workers of the node that started the orchestrator, which join it once their model is
/// loaded (or end the process).
fn join(listener: &TcpListener, timeout: Duration, stop: &AtomicBool) -> Option<Vec<Worker>> {
    let mut deadline: Option<Instant> = None;
    listener.set_nonblocking(true).ok()?;
    let mut workers: Vec<Worker> = Vec::new();
    loop {
        if let Some(first) = workers.first()
            && workers.len() == first.hello.workers()
        {
            workers.sort_by_key(|w| (w.hello.node_rank, w.hello.local_rank));
            return Some(workers);
        }
        if stop.load(Ordering::Relaxed) {
            refuse(
                &mut workers,
                "the node that started the orchestrator stopped before the run started",
            );
            return None;
        }
        if deadline.is_some_and(|deadline| Instant::now() > deadline) {
            let expected = workers.first().map_or(0, |w| w.hello.workers());
            let reason = format!(
                "only {} of {expected} workers joined within {} s",
                workers.len(),
                timeout.as_secs_f64()
            );
            refuse(&mut workers, &reason);
            return None;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => continue,
        };
        // Something that is not a worker (a port scan, a stray client) is dropped alone.
        let hello_by = deadline.unwrap_or_else(|| Instant::now() + timeout);
        let Some(mut worker) = greet(stream, hello_by) else {
            continue;
        };
        let problem = match workers.first() {
            Some(first) => worker.hello.disagreement(&first.hello).or_else(|| {
                let taken = workers.iter().any(|w| w.hello.who() == worker.hello.who());
                taken.then(|| format!("two workers joined as {}", worker.hello.who()))
            }),
            None => worker.hello.own_problem(),
        };
        if let Some(reason) = problem {
            let _ = write_frame(&mut worker.stream, &Frame::Refused(reason.clone()));
            refuse(&mut workers, &reason);
            return None;
        }
        workers.push(worker);
        deadline.get_or_insert_with(|| Instant::now() + timeout);
    }
}

/// Reads a worker's hello, waiting until `deadline` at most.
fn greet(stream: TcpStream, deadline: Instant) -> Option<Worker> {
    let mut stream = stream;
    stream.set_nonblocking(false).ok()?;
    let wait = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .ok()?;
    let _ = stream.set_nodelay(true);
    let Frame::Hello(json) = read_frame(&mut stream, 0).ok()? else {
        return None;
    };
    match serde_json::from_slice::<Hello>(&json) {
        Ok(hello) => Some(Worker { hello, stream }),
        Err(e) => {
            let reason = format!("not a hello this version understands: {e}");
            let _ = write_frame(&mut stream, &Frame::Refused(reason));
            None
        }
    }
}

/// One reduction after another: each worker's contribution, their mean back to all. Ends
/// when every worker leaves, or at the first worker lost, late or out of step (the others
/// are told why).
fn reduce_until_all_leave(workers: &mut [Worker], timeout: Duration) {
    let max_values = workers[0].hello.max_values;
    for seq in 0u64.. {
        let mut contributions = Vec::with_capacity(workers.len());
        let mut leaving = 0;
        for worker in workers.iter_mut() {
            match read_frame(&mut worker.stream, max_values) {
                Ok(Frame::Values { seq: s, values }) if s == seq => contributions.push(values),
                Ok(Frame::Leave) => leaving += 1,
                Ok(other) => {
                    let reason = format!("{} sent {other:?} out of step", worker.hello.who());
                    return refuse(workers, &reason);
                }
                Err(e) => {
                    let reason = lost(&worker.hello, &e, timeout);
                    return refuse(workers, &reason);
                }
            }
        }
        if leaving == workers.len() {
            return;
        }
        if leaving > 0 {
            let reason = format!(
                "{leaving} of {} workers finished while the others went on training",
                workers.len()
            );
            return refuse(workers, &reason);
        }
        match mean(contributions, workers[0].hello.num_nodes) {
            Ok(values) => {
                let result = Frame::Values {
                    seq,
                    values: Some(values),
                };
                if let Err((at, e)) = broadcast(workers, &result) {
                    let reason = lost(&workers[at].hello, &e, timeout);
                    return refuse(workers, &reason);
                }
            }
            Err(reason) => return refuse(workers, &reason),
        }
    }
}

/// Why a worker that could not be read is lost.
fn lost(hello: &Hello, error: &std::io::Error, timeout: Duration) -> String {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "{} sent nothing for {} s: it failed, died or is stuck",
            hello.who(),
            timeout.as_secs_f64()
        ),
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted => format!("{} left the run", hello.who()),
        _ => format!("{} was lost: {error}", hello.who()),
    }
}

/// The mean of the contributions that carry values, summed in rank order: one per node.
fn mean(
    contributions: Vec<Option<Vec<f32>>>,
    num_nodes: usize,
) -> std::result::Result<Vec<f32>, String> {
    let given: Vec<Vec<f32>> = contributions.into_iter().flatten().collect();
    if given.len() != num_nodes {
        return Err(format!(
            "{} contributions for {num_nodes} nodes: the workers are out of step",
            given.len()
        ));
    }
    let len = given[0].len();
    if given.iter().any(|values| values.len() != len) {
        return Err("the nodes' contributions differ in length".into());
    }
    let mut sum = given[0].clone();
    for values in &given[1..] {
        for (total, value) in sum.iter_mut().zip(values) {
            *total += value;
        }
    }
    let count = num_nodes as f32;
    sum.iter_mut().for_each(|total| *total /= count);
    Ok(sum)
}

/// Sends `frame` to every worker; on failure, the worker it failed at.
fn broadcast(
    workers: &mut [Worker],
    frame: &Frame,
) -> std::result::Result<(), (usize, std::io::Error)> {
    let bytes = encode(frame);
    for (at, worker) in workers.iter_mut().enumerate() {
        write_encoded(&mut worker.stream, &bytes).map_err(|e| (at, e))?;
    }
    Ok(())
}

/// Tells every worker why the run ends (best effort), which closes their connections.
fn refuse(workers: &mut [Worker], reason: &str) {
    for worker in workers {
        let _ = worker
            .stream
            .set_write_timeout(Some(Duration::from_secs(5)));
        let _ = write_frame(&mut worker.stream, &Frame::Refused(reason.to_owned()));
        let _ = worker.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_is_over_nodes_in_order() {
        let contributions = vec![Some(vec![1.0, 2.0]), None, Some(vec![3.0, -2.0]), None];
        assert_eq!(mean(contributions, 2).unwrap(), [2.0, 0.0]);
        assert!(mean(vec![Some(vec![1.0]), None], 2).is_err());
        assert!(mean(vec![Some(vec![1.0]), Some(vec![1.0, 2.0])], 2).is_err());
    }

    #[test]
    fn a_port_in_use_is_named() {
        let first = Orchestrator::start(0, Duration::from_secs(1)).unwrap();
        let error = Orchestrator::start(first.port(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(error, Error::PortInUse { port } if port == first.port()));
    }
}
