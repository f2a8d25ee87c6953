//! The listing indexes of `GET /v1/executions`: entries in the `indexes`
//! tree by state, by workflow and state, by the current step's plugin and
//! state, and by both and state, each ending with the execution id. A filtered page reads the
//! matching ranges (one per state when no state is asked for, merged in id
//! order) and then the page's records, so its cost is the page, not the
//! store: with a million executions stored, the ten suspended ones of a
//! workflow are ten reads, not a million.
//!
//! Written in the same transaction as the execution record, so an entry
//! always names a record in that state.

use std::ops::Bound;

use super::{STATES, decode};
use crate::model::{ExecState, Execution};
use crate::store::{ExecutionFilter, StoreError};

/// The tags of the four indexes, distinct from the other users of the
/// `indexes` tree (`c`, `f` for ended executions, `k` for callbacks, `i`
/// for idempotent starts).
const BY_STATE: u8 = b'S';
const BY_WORKFLOW: u8 = b'W';
const BY_PLUGIN: u8 = b'P';
/// Workflow and plugin together: without it a page of a workflow's
/// executions on one plugin read the workflow's range and dropped the
/// others, thousands of records for a page (`docs/performance.md`, 8).
const BY_BOTH: u8 = b'B';

/// The tag of the per-workflow counters in the `counts` tree (the
/// per-state ones are named by their state, none of which starts so).
const WORKFLOW_COUNT: u8 = b'w';

/// Every listing tag, for rebuilding the indexes.
pub(super) const TAGS: [u8; 4] = [BY_STATE, BY_WORKFLOW, BY_PLUGIN, BY_BOTH];

fn state_byte(state: ExecState) -> u8 {
    match state {
        ExecState::Running => b'r',
        ExecState::Suspended => b's',
        ExecState::Completed => b'c',
        ExecState::Failed => b'f',
    }
}

/// What the listing indexes know of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub state: ExecState,
    pub workflow: String,
    /// The current step's plugin.
    pub plugin: String,
}

impl Listed {
    pub fn of(exec: &Execution) -> Self {
        Self {
            state: exec.state,
            workflow: exec.workflow.clone(),
            plugin: exec
                .steps
                .get(exec.step_index)
                .map(|s| s.plugin.clone())
                .unwrap_or_default(),
        }
    }

    /// The index entries of execution `id`.
    pub fn keys(&self, id: &str) -> [Vec<u8>; 4] {
        [
            state_prefix(self.state),
            named_prefix(BY_WORKFLOW, &self.workflow, self.state),
            named_prefix(BY_PLUGIN, &self.plugin, self.state),
            both_prefix(&self.workflow, &self.plugin, self.state),
        ]
        .map(|mut key| {
            key.extend_from_slice(id.as_bytes());
            key
        })
    }
}

/// What the indexes need of a stored record: decoded on every write of
/// an execution (to move its entries and check its version), without the
/// documents and the status log being kept.
#[derive(serde::Deserialize)]
pub(super) struct Stored {
    pub version: u64,
    pub updated_ms: u64,
    pub state: ExecState,
    pub workflow: String,
    pub step_index: usize,
    pub steps: Vec<PluginOnly>,
}

/// A step, as far as the indexes need it.
#[derive(serde::Deserialize)]
pub(super) struct PluginOnly {
    plugin: String,
}

impl Stored {
    pub fn listed(&self) -> Listed {
        let plugin = self
            .steps
            .get(self.step_index)
            .map(|s| s.plugin.clone())
            .unwrap_or_default();
        Listed {
            state: self.state,
            workflow: self.workflow.clone(),
            plugin,
        }
    }
}

fn parse_state_byte(byte: u8) -> Option<ExecState> {
    STATES.into_iter().find(|s| state_byte(*s) == byte)
}

/// The key of the counter of `workflow`'s executions in `state`, in the
/// `counts` tree.
pub(super) fn workflow_count_key(workflow: &str, state: ExecState) -> Vec<u8> {
    named_prefix(WORKFLOW_COUNT, workflow, state)
}

/// The prefix of the per-workflow counters: of `workflow`'s, or all.
pub(super) fn workflow_counts_prefix(workflow: Option<&str>) -> Vec<u8> {
    match workflow {
        None => vec![WORKFLOW_COUNT],
        Some(w) => {
            let mut key = named_prefix(WORKFLOW_COUNT, w, ExecState::Running);
            key.pop();
            key
        }
    }
}

/// The workflow and state a [`workflow_count_key`] names.
pub(super) fn parse_workflow_count_key(key: &[u8]) -> Option<(String, ExecState)> {
    let (&tag, rest) = key.split_first()?;
    let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let name = rest.get(2..2 + len)?;
    let state = parse_state_byte(*rest.get(2 + len)?)?;
    (tag == WORKFLOW_COUNT && rest.len() == 3 + len)
        .then(|| (String::from_utf8_lossy(name).into_owned(), state))
}

fn state_prefix(state: ExecState) -> Vec<u8> {
    vec![BY_STATE, state_byte(state)]
}

/// A name is length-prefixed, so that no name is a prefix of another's
/// entries whatever bytes it holds.
fn named_prefix(tag: u8, name: &str, state: ExecState) -> Vec<u8> {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(4 + name.len());
    key.push(tag);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key.push(state_byte(state));
    key
}

/// A workflow and a plugin, each length-prefixed, then the state.
fn both_prefix(workflow: &str, plugin: &str, state: ExecState) -> Vec<u8> {
    let mut key = named_prefix(BY_BOTH, workflow, state);
    key.pop();
    let len = u16::try_from(plugin.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(plugin.as_bytes());
    key.push(state_byte(state));
    key
}

/// The prefixes of the index ranges `filter` reads, or `None` for the
/// executions tree itself (no filter an index serves); what the chosen
/// ranges do not decide (the creation times' margin) is checked on each
/// record.
fn ranges(filter: &ExecutionFilter) -> Option<Vec<Vec<u8>>> {
    let states: Vec<ExecState> = filter.state.map_or_else(|| STATES.to_vec(), |s| vec![s]);
    let named = |tag, name: &str| states.iter().map(|s| named_prefix(tag, name, *s)).collect();
    if let (Some(workflow), Some(plugin)) = (&filter.workflow, &filter.plugin) {
        Some(
            states
                .iter()
                .map(|s| both_prefix(workflow, plugin, *s))
                .collect(),
        )
    } else if let Some(workflow) = &filter.workflow {
        Some(named(BY_WORKFLOW, workflow))
    } else if let Some(plugin) = &filter.plugin {
        Some(named(BY_PLUGIN, plugin))
    } else {
        filter.state.map(|s| vec![state_prefix(s)])
    }
}

/// The id range `filter` selects: its creation times and its cursor.
fn id_range(filter: &ExecutionFilter) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (lower, upper) = filter.id_bounds();
    let mut start = lower.map_or(Bound::Unbounded, |l| Bound::Included(l.into_bytes()));
    let mut end = upper.map_or(Bound::Unbounded, |u| Bound::Excluded(u.into_bytes()));
    if let Some(past) = &filter.past {
        let past = past.as_bytes().to_vec();
        if filter.newest_first {
            if !matches!(&end, Bound::Excluded(u) if *u <= past) {
                end = Bound::Excluded(past);
            }
        } else if !matches!(&start, Bound::Included(l) if *l > past) {
            start = Bound::Excluded(past);
        }
    }
    (start, end)
}

type Ids<'a> = Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + 'a>;

/// The ids under `prefix` in `tree` within `range`, in the listing's order.
fn ids_under(
    tree: &sled::Tree,
    prefix: Vec<u8>,
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    newest_first: bool,
) -> Ids<'static> {
    let join = |id: &Vec<u8>| [prefix.as_slice(), id].concat();
    let start = match &range.0 {
        Bound::Included(id) => Bound::Included(join(id)),
        Bound::Excluded(id) => Bound::Excluded(join(id)),
        Bound::Unbounded => Bound::Included(prefix.clone()),
    };
    let end = match &range.1 {
        Bound::Included(id) => Bound::Included(join(id)),
        Bound::Excluded(id) => Bound::Excluded(join(id)),
        // Past every entry under the prefix: its last byte, one higher
        // (prefixes end with a state byte, never 0xff).
        Bound::Unbounded if prefix.is_empty() => Bound::Unbounded,
        Bound::Unbounded => {
            let mut next = prefix.clone();
            *next.last_mut().expect("not empty") += 1;
            Bound::Excluded(next)
        }
    };
    let skip = prefix.len();
    let keys = tree.range((start, end)).keys();
    let strip = move |key: sled::Result<sled::IVec>| {
        key.map(|k| k[skip..].to_vec()).map_err(StoreError::from)
    };
    if newest_first {
        Box::new(keys.rev().map(strip))
    } else {
        Box::new(keys.map(strip))
    }
}

/// Merges id streams, each already in the listing's order, into one.
fn merge(sources: Vec<Ids<'_>>, newest_first: bool) -> Ids<'_> {
    let mut heads: Vec<_> = sources.into_iter().map(Iterator::peekable).collect();
    Box::new(std::iter::from_fn(move || {
        let mut next = None;
        let mut best: Option<&Vec<u8>> = None;
        for (i, head) in heads.iter_mut().enumerate() {
            match head.peek() {
                None => {}
                // An error is handed over at once.
                Some(Err(_)) => {
                    next = Some(i);
                    break;
                }
                Some(Ok(id)) if best.is_none_or(|b| (id < b) != newest_first) => {
                    best = Some(id);
                    next = Some(i);
                }
                Some(Ok(_)) => {}
            }
        }
        heads[next?].next()
    }))
}

/// The executions `filter` selects, newest or oldest first, read from the
/// listing indexes (or the executions tree, for no indexed filter).
pub(super) fn list(
    executions: &sled::Tree,
    indexes: &sled::Tree,
    filter: &ExecutionFilter,
) -> Result<Vec<Execution>, StoreError> {
    let range = id_range(filter);
    let ids = match ranges(filter) {
        Some(prefixes) => merge(
            prefixes
                .into_iter()
                .map(|p| ids_under(indexes, p, &range, filter.newest_first))
                .collect(),
            filter.newest_first,
        ),
        None => ids_under(executions, Vec::new(), &range, filter.newest_first),
    };
    let mut out = Vec::new();
    for id in ids {
        let id = id?;
        // An entry is written with its record; a record gone between the
        // two reads was removed meanwhile.
        let Some(bytes) = executions.get(&id)? else {
            continue;
        };
        let exec: Execution = decode(&id, &bytes)?;
        if filter.matches(&exec) {
            out.push(exec);
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    Ok(out)
}
