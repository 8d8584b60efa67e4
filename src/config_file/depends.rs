//! `depends_on`: which services a service needs (it calls their APIs). A
//! release is rolled back in reverse dependency order, dependents first, so
//! no service is left running against an API its dependency no longer has.
//! The checks here make sure every name exists and the graph has no cycle.

use super::Config;
use crate::config::{closest, ConfigError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

impl Config {
    /// `depends_on` names configured services, not the service itself, and
    /// the dependencies form no cycle (named in full, at the first edge).
    pub(super) fn check_depends_on(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let names = self.service_names();
        for s in &self.services {
            for dep in &s.depends_on {
                let d = dep.as_ref().as_str();
                if d == s.name() {
                    errors.push(
                        ConfigError::at(
                            path,
                            source,
                            Some(dep.span()),
                            format!("service `{}` depends on itself", s.name()),
                        )
                        .help("remove it from depends_on"),
                    );
                } else if !names.contains(&d) {
                    let near = closest(d, names.iter().copied());
                    let help = match near.first() {
                        Some(best) => {
                            format!("did you mean `{best}`? services: {}", names.join(", "))
                        }
                        None => format!(
                            "depends_on names services defined in [[services]]: {}",
                            names.join(", ")
                        ),
                    };
                    errors.push(
                        ConfigError::at(
                            path,
                            source,
                            Some(dep.span()),
                            format!(
                                "service `{}` depends on `{d}`, which is not a service",
                                s.name()
                            ),
                        )
                        .help(help),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(&self.dependency_graph()) {
            // Point at the edge that closes the cycle's first step.
            let span = self
                .services
                .iter()
                .find(|s| s.name() == cycle[0])
                .and_then(|s| s.depends_on.iter().find(|d| d.as_ref() == &cycle[1]))
                .map(|d| d.span());
            errors.push(
                ConfigError::at(
                    path,
                    source,
                    span,
                    format!("depends_on has a cycle: {}", cycle.join(" → ")),
                )
                .help("a release is rolled back dependents first, which needs an order; remove one of these dependencies"),
            );
        }
        errors
    }

    /// Service → the configured services it depends on (unknown names and
    /// itself left out; `check-config` reports those).
    pub fn dependency_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let names = self.service_names();
        self.services
            .iter()
            .map(|s| {
                let deps = s
                    .depends_on
                    .iter()
                    .map(|d| d.as_ref().clone())
                    .filter(|d| d != s.name() && names.contains(&d.as_str()))
                    .collect();
                (s.name().to_string(), deps)
            })
            .collect()
    }

    /// `services` in the order to roll them back: every service before the
    /// services it depends on (dependents first). Ties keep the order given.
    pub fn rollback_order(&self, services: &[String]) -> Vec<String> {
        rollback_order(&self.dependency_graph(), services)
    }

    /// The configured services that depend on `service`, directly or
    /// through others.
    pub fn dependents_of(&self, service: &str) -> BTreeSet<String> {
        let graph = self.dependency_graph();
        let mut found = BTreeSet::new();
        let mut todo = vec![service.to_string()];
        while let Some(cur) = todo.pop() {
            for (s, deps) in &graph {
                if deps.contains(&cur) && s != service && found.insert(s.clone()) {
                    todo.push(s.clone());
                }
            }
        }
        found
    }
}

/// Kahn's algorithm on `services`, where `graph[a]` holds what `a` depends
/// on: a service comes out once no remaining service depends on it,
/// directly or through services outside `services` (so `frontend → checkout
/// → payments` orders frontend before payments even when checkout is not
/// in the release). A cycle (which `check-config` refuses) cannot stop it:
/// the rest comes out in the given order.
pub fn rollback_order(
    graph: &BTreeMap<String, BTreeSet<String>>,
    services: &[String],
) -> Vec<String> {
    let wanted: BTreeSet<&String> = services.iter().collect();
    // a must come before b when b is reachable from a through depends_on.
    let reaches = |a: &String, b: &String| -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a];
        while let Some(cur) = todo.pop() {
            for d in graph.get(cur).into_iter().flatten() {
                if d == b {
                    return true;
                }
                if seen.insert(d) {
                    todo.push(d);
                }
            }
        }
        false
    };
    let mut blockers: BTreeMap<&String, usize> = wanted
        .iter()
        .map(|b| {
            (
                *b,
                wanted.iter().filter(|a| *a != b && reaches(a, b)).count(),
            )
        })
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(services.len());
    let mut left: Vec<&String> = services.iter().collect();
    left.dedup();
    while !left.is_empty() {
        let next = left
            .iter()
            .position(|s| blockers.get(s).copied() == Some(0))
            .unwrap_or(0);
        let s = left.remove(next);
        for b in &left {
            if reaches(s, b) {
                if let Some(n) = blockers.get_mut(b) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        blockers.remove(s);
        out.push(s.clone());
    }
    out
}

/// A cycle in `graph`, as its services with the first repeated at the end
/// (`checkout → payments → checkout`), if there is one.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        n: &'a String,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a String, Mark>,
        path: &mut Vec<&'a String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut c: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                c.push(n.clone());
                return Some(c);
            }
            None => {}
        }
        marks.insert(n, Mark::Open);
        path.push(n);
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(n, graph, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(s, deps)| (s.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependents_come_before_what_they_depend_on() {
        // frontend → checkout → payments
        let g = graph(&[
            ("frontend", &["checkout"]),
            ("checkout", &["payments"]),
            ("payments", &[]),
        ]);
        assert_eq!(
            rollback_order(&g, &names(&["payments", "checkout", "frontend"])),
            names(&["frontend", "checkout", "payments"])
        );
        // Unrelated services keep the order they were given.
        assert_eq!(
            rollback_order(&g, &names(&["search", "payments", "frontend"])),
            names(&["search", "frontend", "payments"])
        );
    }

    #[test]
    fn a_dependency_through_a_service_outside_the_release_still_orders() {
        let g = graph(&[
            ("frontend", &["checkout"]),
            ("checkout", &["payments"]),
            ("payments", &[]),
        ]);
        assert_eq!(
            rollback_order(&g, &names(&["payments", "frontend"])),
            names(&["frontend", "payments"])
        );
    }

    #[test]
    fn a_diamond_puts_the_shared_dependency_last() {
        let g = graph(&[
            ("web", &["cart", "search"]),
            ("cart", &["db-api"]),
            ("search", &["db-api"]),
            ("db-api", &[]),
        ]);
        let order = rollback_order(&g, &names(&["db-api", "search", "cart", "web"]));
        assert_eq!(order.first().map(String::as_str), Some("web"));
        assert_eq!(order.last().map(String::as_str), Some("db-api"));
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn cycles_are_found_and_named() {
        let g = graph(&[("checkout", &["payments"]), ("payments", &["checkout"])]);
        assert_eq!(
            find_cycle(&g),
            Some(names(&["checkout", "payments", "checkout"]))
        );
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])]);
        assert_eq!(find_cycle(&g), Some(names(&["b", "c", "b"])));
        let g = graph(&[("a", &["b"]), ("b", &[]), ("c", &["a", "b"])]);
        assert_eq!(find_cycle(&g), None);
        // Even with a cycle, ordering ends and returns every service once.
        let g = graph(&[("checkout", &["payments"]), ("payments", &["checkout"])]);
        assert_eq!(
            rollback_order(&g, &names(&["checkout", "payments"])).len(),
            2
        );
    }
}
