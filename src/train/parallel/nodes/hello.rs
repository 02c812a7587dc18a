//! What a worker tells the orchestrator when it joins, and the check that every worker of a
//! run agrees: the same nodes and devices, the same model and method, the same settings.

use serde::{Deserialize, Serialize};

/// The wire protocol's version: workers of other versions are refused.
pub(super) const PROTOCOL: u32 = 1;

/// A worker's introduction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`] of the sender.
    pub protocol: u32,
    /// Nodes in the run.
    pub num_nodes: usize,
    /// This worker's node, from 0.
    pub node_rank: usize,
    /// Workers per node.
    pub devices: usize,
    /// This worker on its node, from 0.
    pub local_rank: usize,
    /// The largest reduction of the run, in values (the trainable values).
    pub max_values: usize,
    /// Settings every worker must share, by name (method, steps, batch size, seed, ...), in
    /// the order a difference is reported.
    pub run: Vec<(String, String)>,
    /// The trainable parameters in order, as `path [shape]` ([`GradLayout::names`]).
    ///
    /// [`GradLayout::names`]: crate::train::parallel::GradLayout::names
    pub params: Vec<String>,
}

impl Hello {
    /// A hello of this protocol version.
    pub fn new(
        (num_nodes, node_rank): (usize, usize),
        (devices, local_rank): (usize, usize),
        run: Vec<(String, String)>,
        params: Vec<String>,
        max_values: usize,
    ) -> Self {
        Hello {
            protocol: PROTOCOL,
            num_nodes,
            node_rank,
            devices,
            local_rank,
            max_values,
            run,
            params,
        }
    }

    /// Workers in the whole run.
    pub(super) fn workers(&self) -> usize {
        self.num_nodes * self.devices
    }

    /// `node R, worker L`.
    pub(super) fn who(&self) -> String {
        format!("node {}, worker {}", self.node_rank, self.local_rank)
    }

    /// Why this worker cannot join `first`'s run, if it cannot.
    pub(super) fn disagreement(&self, first: &Hello) -> Option<String> {
        let (who, theirs) = (self.who(), first.who());
        if self.protocol != first.protocol {
            return Some(format!(
                "{who} speaks protocol {}, {theirs} protocol {}: use the same version of spectrum",
                self.protocol, first.protocol
            ));
        }
        let counts = [
            ("--num-nodes", self.num_nodes, first.num_nodes),
            ("--devices", self.devices, first.devices),
        ];
        for (flag, mine, first) in counts {
            if mine != first {
                return Some(format!("{who} has {flag} {mine}, {theirs} {flag} {first}"));
            }
        }
        if let Some(reason) = self.own_problem() {
            return Some(reason);
        }
        let value = |run: &[(String, String)], name: &str| {
            let found = run.iter().find(|(n, _)| n == name);
            found.map_or("none".to_string(), |(_, v)| v.clone())
        };
        let names = self.run.iter().chain(&first.run).map(|(name, _)| name);
        for name in names {
            let (mine, first) = (value(&self.run, name), value(&first.run, name));
            if mine != first {
                return Some(format!("{who} has {name} {mine}, {theirs} {name} {first}"));
            }
        }
        params_disagreement(&self.params, &first.params)
            .map(|reason| format!("{who} and {theirs} train different parameters: {reason}"))
    }

    /// Why this hello cannot be part of any run.
    pub(super) fn own_problem(&self) -> Option<String> {
        let who = self.who();
        if self.num_nodes == 0 || self.node_rank >= self.num_nodes {
            return Some(format!(
                "{who} has --node-rank {} with --num-nodes {} (ranks go from 0 to --num-nodes - 1)",
                self.node_rank, self.num_nodes
            ));
        }
        if self.devices == 0 || self.local_rank >= self.devices {
            return Some(format!("{who} is not one of its {} devices", self.devices));
        }
        None
    }
}

fn params_disagreement(mine: &[String], first: &[String]) -> Option<String> {
    if let Some((at, (a, b))) = mine
        .iter()
        .zip(first)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Some(format!("parameter {at} is {a} against {b}"));
    }
    (mine.len() != first.len())
        .then(|| format!("{} parameters against {}", mine.len(), first.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node_rank: usize) -> Hello {
        let run = vec![("method".to_string(), "lora".to_string())];
        let params = vec!["a [2]".to_string(), "b [2, 3]".to_string()];
        Hello::new((2, node_rank), (1, 0), run, params, 8)
    }

    #[test]
    fn workers_of_one_run_agree() {
        assert_eq!(hello(1).disagreement(&hello(0)), None);
    }

    #[test]
    fn each_difference_is_named() {
        let mut other = hello(1);
        other.run[0].1 = "full".into();
        let reason = other.disagreement(&hello(0)).unwrap();
        assert!(
            reason.contains("method full") && reason.contains("method lora"),
            "{reason}"
        );

        let mut other = hello(1);
        other.devices = 2;
        let reason = other.disagreement(&hello(0)).unwrap();
        assert!(
            reason.contains("--devices 2") && reason.contains("--devices 1"),
            "{reason}"
        );

        let mut other = hello(1);
        other.params[1] = "b [3, 3]".into();
        let reason = other.disagreement(&hello(0)).unwrap();
        assert!(reason.contains("b [3, 3] against b [2, 3]"), "{reason}");

        let mut other = hello(1);
        other.params.pop();
        assert!(
            other
                .disagreement(&hello(0))
                .unwrap()
                .contains("1 parameters against 2")
        );

        let mut other = hello(1);
        other.run.push(("seed".into(), "3".into()));
        assert!(other.disagreement(&hello(0)).unwrap().contains("seed 3"));

        let reason = hello(2).disagreement(&hello(0)).unwrap();
        assert!(reason.contains("--node-rank 2"), "{reason}");
    }
}
