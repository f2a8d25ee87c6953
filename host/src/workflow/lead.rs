//! Single-runner chores: of the daemons sharing a store, one at a time
//! sweeps retention and one takes over what stopped nodes left running
//! ([`NodeStore::lead`](crate::store::NodeStore::lead)). Their writes are
//! compare-and-swap transitions, so this is not what keeps them correct;
//! it keeps N nodes from reading the same index and losing N−1 of every
//! race, work that grew with the number of nodes.

use super::*;
use crate::store::Chore;

/// Whether this node leads a chore, as it last found: a change is logged
/// once, not at every look.
#[derive(Debug, Default)]
pub(super) struct Leading(Option<bool>);

impl Workflows {
    /// Whether this node should do `chore` now, asking the store (which
    /// also renews the lead for `hold_ms`). A store that cannot answer
    /// means no: the chore waits for it like every other write would, and
    /// what this node last knew of the lead stands (no other node took it
    /// that this node heard of).
    pub(super) async fn leads(&self, chore: Chore, hold_ms: u64, was: &mut Leading) -> bool {
        let leads = match self.store.lead(chore, &self.node, hold_ms).await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(node = %self.node, chore = chore.as_str(), error = %e, "cannot ask the store which node runs this chore; trying again");
                return false;
            }
        };
        if was.0 != Some(leads) {
            self.metrics.leading(chore.as_str(), leads);
            // On a store of one's own the answer is always yes: nothing
            // worth a line.
            if self.store.is_shared() {
                if leads {
                    tracing::info!(node = %self.node, chore = chore.as_str(), "this node now runs this chore for every node");
                } else if was.0.is_some() {
                    tracing::info!(node = %self.node, chore = chore.as_str(), "another node runs this chore now");
                }
            }
            was.0 = Some(leads);
        }
        leads
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Chore;

    /// The metrics name every chore the store knows, so that none goes
    /// without its gauge, at 0 until the node leads it.
    #[test]
    fn every_chore_has_its_gauge() {
        let metrics = crate::metrics::Metrics::new();
        let series =
            |chore: Chore| format!("stephost_chore_leader{{chore=\"{}\"}}", chore.as_str());
        let page = metrics.render(&Default::default());
        for chore in Chore::ALL {
            assert!(page.contains(&format!("{} 0\n", series(chore))), "{page}");
        }
        metrics.leading(Chore::TakeOver.as_str(), true);
        let page = metrics.render(&Default::default());
        assert!(
            page.contains(&format!("{} 1\n", series(Chore::TakeOver))),
            "{page}"
        );
        assert!(
            page.contains(&format!("{} 0\n", series(Chore::Retention))),
            "{page}"
        );
    }
}
