//! Data parallelism across nodes: the workers of every node join an orchestrator at
//! `HOST:PORT`, which checks that they agree (nodes, devices, model, method, settings) and
//! then averages their gradients step after step.
//!
//! This is our own small TCP transport, not burn-collective's global orchestrator:
//! burn-collective 0.21.0 (its last release) completes the first all-reduce between nodes
//! and hangs in the second (its peer sync never clears the peers it has seen), and its
//! waits have no timeout. Within a node, the devices still reduce through burn-collective.

mod hello;
mod link;
mod orchestrator;
mod wire;

pub use hello::Hello;
pub use link::NodeLink;
pub use orchestrator::Orchestrator;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Error;

    fn hello(node_rank: usize, seed: &str) -> Hello {
        let run = vec![("--seed".to_string(), seed.to_string())];
        Hello::new((2, node_rank), (1, 0), run, vec!["w [2]".into()], 16)
    }

    /// Joins node 0 and node 1 (with `seeds`) at a fresh orchestrator, which is returned too
    /// (dropping it waits for its run to end).
    fn join_two(seeds: [&str; 2]) -> (Orchestrator, [crate::error::Result<NodeLink>; 2]) {
        let timeout = Duration::from_secs(20);
        let orchestrator = Orchestrator::start(0, timeout).unwrap();
        let address = format!("127.0.0.1:{}", orchestrator.port());
        let other = {
            let (address, hello) = (address.clone(), hello(1, seeds[1]));
            std::thread::spawn(move || NodeLink::join(&address, hello, timeout))
        };
        let first = NodeLink::join(&address, hello(0, seeds[0]), timeout);
        (orchestrator, [first, other.join().unwrap()])
    }

    #[test]
    fn nodes_average_round_after_round() {
        let (_orchestrator, [first, second]) = join_two(["0", "0"]);
        let (mut first, mut second) = (first.unwrap(), second.unwrap());
        let other = std::thread::spawn(move || {
            let a = second.mean("test", Some(&[3.0, 5.0])).unwrap();
            let b = second.mean("test", Some(&[1.0, 1.0])).unwrap();
            second.leave();
            (a, b)
        });
        let a = first.mean("test", Some(&[1.0, -1.0])).unwrap();
        let b = first.mean("test", Some(&[2.0, 4.0])).unwrap();
        first.leave();
        assert_eq!((a.clone(), b.clone()), other.join().unwrap());
        assert_eq!((a, b), (vec![2.0, 2.0], vec![1.5, 2.5]));
    }

    #[test]
    fn nodes_that_differ_are_both_refused() {
        let (_orchestrator, joins) = join_two(["0", "1"]);
        for joined in joins {
            match joined {
                Err(Error::NodesDisagree(reason)) => assert!(reason.contains("--seed"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_node_that_leaves_early_fails_the_other() {
        let (_orchestrator, [first, second]) = join_two(["0", "0"]);
        let mut first = first.unwrap();
        drop(second.unwrap());
        match first.mean("the test's reduction", Some(&[1.0])) {
            Err(Error::Collective { what, reason }) => {
                assert_eq!(what, "the test's reduction");
                assert!(reason.contains("node 1, worker 0 left the run"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
