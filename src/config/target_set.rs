//! The scheduled targets as one validated set: the targets, their `depends_on` graph (indices,
//! a topological order, connected components) and the scheduler's settings, built once by
//! [`assemble`] and never changed after; a reload or a discovery update builds a new set.
//!
//! Targets reach `assemble` already validated one by one (`targets::validate_target`); what
//! needs the whole set is checked here: unique names, edges to known targets, no cycle. The
//! file's own targets are *fixed*: any such problem is a load error, as it always was. Targets
//! from other sources (Kubernetes discovery) are *candidates*: a candidate with a
//! problem is rejected alone and returned in [`Assembled::rejected`] (its source reports it),
//! and the rest of the set stands.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::config::targets::{SchedulerSettings, Target};
use crate::values::FieldError;

/// The targets the scheduler runs, with their dependency graph and the scheduler's settings.
///
/// Index `i` of [`TargetSet::targets`] is node `i` of [`TargetSet::graph`]: the file's targets
/// first, in file order, then accepted candidates in the order they were offered.
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    targets: Vec<Arc<Target>>,
    graph: Graph,
    settings: SchedulerSettings,
}

impl TargetSet {
    /// The targets, in graph index order.
    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// The `depends_on` graph over [`TargetSet::targets`]' indices.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The scheduler's settings.
    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    /// How many targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets, in graph index order.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Target>> {
        self.targets.iter()
    }

    /// The target named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Target>> {
        self.graph.index_of(name).map(|i| &self.targets[i])
    }

    /// The set of the targets whose connected component `keep` picks, given each component's
    /// lowest target name (a key that does not depend on the order targets came in). A whole
    /// component is kept or left, so every kept target's dependencies are kept with it.
    pub fn components_where(&self, mut keep: impl FnMut(&str) -> bool) -> TargetSet {
        let mut key: Vec<Option<&str>> = vec![None; self.graph.components()];
        for (i, t) in self.targets.iter().enumerate() {
            let k = &mut key[self.graph.component(i)];
            if k.is_none_or(|k| t.name.as_str() < k) {
                *k = Some(&t.name);
            }
        }
        let kept: Vec<bool> = key.iter().map(|k| keep(k.unwrap_or_default())).collect();
        let targets: Vec<Arc<Target>> = self
            .targets
            .iter()
            .enumerate()
            .filter(|&(i, _)| kept[self.graph.component(i)])
            .map(|(_, t)| t.clone())
            .collect();
        let graph = Graph::build(&targets);
        TargetSet {
            targets,
            graph,
            settings: self.settings.clone(),
        }
    }
}

impl<'a> IntoIterator for &'a TargetSet {
    type Item = &'a Arc<Target>;
    type IntoIter = std::slice::Iter<'a, Arc<Target>>;

    fn into_iter(self) -> Self::IntoIter {
        self.targets.iter()
    }
}

/// The `depends_on` graph: node `i` is target `i` of its [`TargetSet`]. Acyclic by
/// construction; every edge names a target in the set.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Per node, the nodes it depends on, in `depends_on` order without repeats.
    dependencies: Vec<Vec<usize>>,
    /// Per node, the nodes that depend on it, ascending.
    dependents: Vec<Vec<usize>>,
    /// Every node, dependencies before dependents.
    topological: Vec<usize>,
    /// Per node, its weakly connected component.
    component: Vec<usize>,
    components: usize,
    index: HashMap<String, usize>,
}

impl Graph {
    /// The targets node `i` depends on.
    pub fn dependencies(&self, i: usize) -> &[usize] {
        &self.dependencies[i]
    }

    /// The targets that depend on node `i`.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// Every node once, each after all of its dependencies (level by level: nodes with no
    /// dependency first, in index order).
    pub fn topological(&self) -> &[usize] {
        &self.topological
    }

    /// Node `i`'s connected component (edges taken in either direction), numbered from 0 in
    /// the order of each component's lowest index.
    pub fn component(&self, i: usize) -> usize {
        self.component[i]
    }

    /// How many connected components (a target without any edge is one of its own).
    pub fn components(&self) -> usize {
        self.components
    }

    /// The node of the target named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.dependencies.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
    }

    /// Builds the graph of `targets`, whose names are unique and whose edges all name one of
    /// them and form no cycle (what `assemble` has made sure of).
    fn build(targets: &[Arc<Target>]) -> Graph {
        let index: HashMap<String, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let dependencies = edges(targets.iter().map(|t| t.as_ref()), &index);
        let mut dependents = vec![Vec::new(); targets.len()];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(i);
            }
        }
        // Kahn's algorithm; a FIFO keeps it deterministic (by levels, index order within).
        let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let mut ready: VecDeque<usize> = (0..targets.len()).filter(|&i| waiting[i] == 0).collect();
        let mut topological = Vec::with_capacity(targets.len());
        while let Some(n) = ready.pop_front() {
            topological.push(n);
            for &d in &dependents[n] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        debug_assert_eq!(
            topological.len(),
            targets.len(),
            "a cycle reached Graph::build"
        );
        // Components by union-find, then numbered by their lowest index.
        let mut parent: Vec<usize> = (0..targets.len()).collect();
        fn root(parent: &mut [usize], mut n: usize) -> usize {
            while parent[n] != n {
                parent[n] = parent[parent[n]];
                n = parent[n];
            }
            n
        }
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                let (a, b) = (root(&mut parent, i), root(&mut parent, d));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
        let mut number: HashMap<usize, usize> = HashMap::new();
        let component: Vec<usize> = (0..targets.len())
            .map(|i| {
                let r = root(&mut parent, i);
                let next = number.len();
                *number.entry(r).or_insert(next)
            })
            .collect();
        Graph {
            dependencies,
            dependents,
            topological,
            component,
            components: number.len(),
            index,
        }
    }
}

/// A candidate target refused by [`assemble`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The candidate's name.
    pub name: String,
    /// Why; the path is relative to the target (`name`, `depends_on[0]`, `depends_on`).
    pub error: FieldError,
}

/// A problem with a fixed target (one from the file), which fails the whole set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// The target's index among the fixed targets (its entry in the file's `targets:`).
    pub index: usize,
    /// What is wrong; the path is relative to the target.
    pub error: FieldError,
}

/// What [`assemble`] built.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The set.
    pub set: TargetSet,
    /// The candidates left out, in the order they were offered.
    pub rejected: Vec<Rejection>,
}

/// The error for a second target named `name`; `first` is the index of the first one among the
/// file's targets.
pub fn duplicate_name(name: &str, first: usize) -> FieldError {
    FieldError::new(
        "name",
        format!("duplicate target name {name:?} (first used by targets[{first}])"),
    )
}

/// Builds the target set from validated targets: `fixed` (the file's, where every problem is
/// an error, reported as before) and `candidates` (other sources', where a problem rejects that
/// candidate alone). A fixed target may depend on fixed targets only, so what the file means
/// never depends on what discovery finds; a candidate may depend on any target in the set.
pub fn assemble(
    fixed: Vec<Target>,
    candidates: Vec<Target>,
    settings: SchedulerSettings,
) -> Result<Assembled, TargetError> {
    check_fixed(&fixed)?;
    let mut rejected = Vec::new();
    let mut names: HashSet<&str> = fixed.iter().map(|t| t.name.as_str()).collect();
    // Indices into `candidates` of those still in.
    let mut accepted: Vec<usize> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        if names.insert(&c.name) {
            accepted.push(i);
        } else {
            rejected.push(Rejection {
                name: c.name.clone(),
                error: FieldError::new(
                    "name",
                    format!("duplicate target name {:?} (already in the set)", c.name),
                ),
            });
        }
    }
    // Rejecting a candidate can leave others pointing at it, so repeat until nothing changes.
    loop {
        let before = rejected.len();
        accepted.retain(|&i| {
            let c = &candidates[i];
            let Some(error) = unknown_edge(c, &names) else {
                return true;
            };
            names.remove(c.name.as_str());
            rejected.push(Rejection {
                name: c.name.clone(),
                error,
            });
            false
        });
        // The fixed targets have no cycle and no edge to a candidate, so a cycle found here is
        // made of candidates only; all of its members go.
        let nodes: Vec<&Target> = fixed
            .iter()
            .chain(accepted.iter().map(|&i| &candidates[i]))
            .collect();
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        if let Some(cycle) = find_cycle(&edges(nodes.iter().copied(), &index)) {
            let message = cycle_message(&cycle, &nodes);
            let members: HashSet<usize> = cycle
                .iter()
                .filter_map(|&n| n.checked_sub(fixed.len()))
                .collect();
            let mut position = 0;
            accepted.retain(|&i| {
                let member = members.contains(&position);
                position += 1;
                if !member {
                    return true;
                }
                let c = &candidates[i];
                names.remove(c.name.as_str());
                rejected.push(Rejection {
                    name: c.name.clone(),
                    error: FieldError::new("depends_on", message.clone()),
                });
                false
            });
        }
        if rejected.len() == before {
            break;
        }
    }
    let mut keep = vec![false; candidates.len()];
    for i in accepted {
        keep[i] = true;
    }
    let targets: Vec<Arc<Target>> = fixed
        .into_iter()
        .chain(
            candidates
                .into_iter()
                .zip(keep)
                .filter_map(|(c, keep)| keep.then_some(c)),
        )
        .map(Arc::new)
        .collect();
    let graph = Graph::build(&targets);
    Ok(Assembled {
        set: TargetSet {
            targets,
            graph,
            settings,
        },
        rejected,
    })
}

/// The file's checks, with their messages and order: names unique, then every edge to a known
/// target other than itself, then no cycle.
fn check_fixed(fixed: &[Target]) -> Result<(), TargetError> {
    let err = |index: usize, error: FieldError| TargetError { index, error };
    let mut index: HashMap<String, usize> = HashMap::with_capacity(fixed.len());
    for (i, t) in fixed.iter().enumerate() {
        if let Some(&first) = index.get(&t.name) {
            return Err(err(i, duplicate_name(&t.name, first)));
        }
        index.insert(t.name.clone(), i);
    }
    let names: HashSet<&str> = index.keys().map(String::as_str).collect();
    for (i, t) in fixed.iter().enumerate() {
        if let Some(e) = unknown_edge(t, &names) {
            return Err(err(i, e));
        }
    }
    if let Some(cycle) = find_cycle(&edges(fixed.iter(), &index)) {
        let message = cycle_message(&cycle, &fixed.iter().collect::<Vec<_>>());
        return Err(err(cycle[0], FieldError::new("depends_on", message)));
    }
    Ok(())
}

/// The first edge of `t` to itself or to a name not in `names`.
fn unknown_edge(t: &Target, names: &HashSet<&str>) -> Option<FieldError> {
    t.depends_on.iter().enumerate().find_map(|(j, d)| {
        if !names.contains(d.as_str()) {
            Some(FieldError::new(
                format!("depends_on[{j}]"),
                format!("target {:?} depends on unknown target {d:?}", t.name),
            ))
        } else if d == &t.name {
            Some(FieldError::new(
                format!("depends_on[{j}]"),
                format!("target {:?} depends on itself", t.name),
            ))
        } else {
            None
        }
    })
}

/// Each target's dependencies as node indices, in `depends_on` order without repeats; names
/// missing from `index` are skipped.
fn edges<'a>(
    targets: impl Iterator<Item = &'a Target>,
    index: &HashMap<String, usize>,
) -> Vec<Vec<usize>> {
    targets
        .map(|t| {
            let mut deps: Vec<usize> = Vec::with_capacity(t.depends_on.len());
            for d in &t.depends_on {
                if let Some(&n) = index.get(d)
                    && !deps.contains(&n)
                {
                    deps.push(n);
                }
            }
            deps
        })
        .collect()
}

/// "dependency cycle: app -> db -> app".
fn cycle_message(cycle: &[usize], nodes: &[&Target]) -> String {
    let names: Vec<&str> = cycle.iter().map(|&n| nodes[n].name.as_str()).collect();
    format!("dependency cycle: {}", names.join(" -> "))
}

/// A cycle in `deps`, as the nodes along it (the first repeated at the end).
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Iterative depth-first search with colours: 0 unvisited, 1 on the stack, 2 done.
    let mut colour = vec![0u8; deps.len()];
    for start in 0..deps.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[node].get(*next) {
                *next += 1;
                match colour[d] {
                    0 => {
                        colour[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(d);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
