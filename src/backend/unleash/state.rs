//! A flag and its state in one environment: enabled, and the rollout
//! percentage of its gradual strategies; the revision rollbot shows for it
//! (`off`, `on`, `on at 25%`) and where a promote takes it.

use serde_json::Value;

/// Checks a list of rollout steps: percentages from 1 to 100, rising.
pub fn check_steps(steps: &[u8]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("steps is empty; write rising percentages such as 10,25,50,100".into());
    }
    if steps.iter().any(|s| *s == 0 || *s > 100) {
        return Err(format!(
            "steps {steps:?} must be percentages from 1 to 100, for example 10,25,50,100"
        ));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "steps {steps:?} must rise, for example 10,25,50,100"
        ));
    }
    Ok(())
}

/// Parses a service's `steps = "10,25,50,100"`.
pub fn parse_steps(text: &str) -> Result<Vec<u8>, String> {
    let steps = text
        .split(',')
        .map(|p| {
            p.trim().trim_end_matches('%').parse::<u8>().map_err(|_| {
                format!(
                    "steps `{text}`: `{}` is not a percentage; write for example \"10,25,50,100\"",
                    p.trim()
                )
            })
        })
        .collect::<Result<Vec<u8>, String>>()?;
    check_steps(&steps)?;
    Ok(steps)
}

/// One service's flag: where it lives and how it is promoted.
#[derive(Clone, Debug)]
pub(super) struct Flag {
    pub(super) project: String,
    pub(super) name: String,
    pub(super) environment: String,
    pub(super) steps: Vec<u8>,
}

/// The flag's state in one environment, as the admin API reports it.
#[derive(Clone, Debug)]
pub(super) struct EnvState {
    pub(super) enabled: bool,
    pub(super) strategies: Vec<Value>,
    /// The other environments of the flag, `name on|off`.
    pub(super) others: Vec<String>,
}

pub(super) fn rollout_of(strategy: &Value) -> Option<u8> {
    if strategy["name"] != "flexibleRollout" {
        return None;
    }
    match &strategy["parameters"]["rollout"] {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        _ => None,
    }
}

/// `flexibleRollout 25% (stickiness default)`, `default`, `userWithId, 2 constraints`.
pub(super) fn describe_strategy(s: &Value) -> String {
    let name = s["name"].as_str().unwrap_or("?");
    let mut out = match rollout_of(s) {
        Some(p) => format!(
            "{name} {p}% (stickiness {})",
            s["parameters"]["stickiness"].as_str().unwrap_or("default")
        ),
        None => name.to_string(),
    };
    let constraints = s["constraints"].as_array().map_or(0, Vec::len);
    if constraints > 0 {
        out.push_str(&format!(
            ", {constraints} constraint{}",
            if constraints == 1 { "" } else { "s" }
        ));
    }
    if s["disabled"] == true {
        out.push_str(", disabled");
    }
    out
}

impl EnvState {
    pub(super) fn rollouts(&self) -> Vec<u8> {
        self.strategies.iter().filter_map(rollout_of).collect()
    }

    /// The least exposed gradual rollout, when there is one.
    pub(super) fn percentage(&self) -> Option<u8> {
        self.rollouts().into_iter().min()
    }

    /// The state as a revision: `off`, `on`, `on at 25%`.
    pub(super) fn revision(&self) -> String {
        match (self.enabled, self.percentage()) {
            (false, _) => "off".into(),
            (true, None) => "on".into(),
            (true, Some(p)) => format!("on at {p}%"),
        }
    }

    pub(super) fn strategies_text(&self) -> String {
        if self.strategies.is_empty() {
            return "no strategies (on means on for everyone)".into();
        }
        self.strategies
            .iter()
            .map(describe_strategy)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a revision promises: enabled, and the rollout percentage if any.
pub(super) fn expected(revision: &str) -> Option<(bool, Option<u8>)> {
    match revision {
        "off" => Some((false, None)),
        "on" => Some((true, None)),
        r => r
            .strip_prefix("on at ")
            .and_then(|p| p.strip_suffix('%'))
            .and_then(|p| p.parse().ok())
            .map(|p| (true, Some(p))),
    }
}

/// Where a promote takes the flag: the revision and, for a gradual
/// rollout, the percentage. `None` when it is already fully promoted.
pub(super) fn promoted(f: &Flag, state: &EnvState, full: bool) -> Option<(String, Option<u8>)> {
    match state.percentage() {
        None if state.enabled => None,
        None => Some(("on".into(), None)),
        Some(p) => {
            let to = if full {
                100
            } else if !state.enabled {
                // Back on where it was before the rollback; the next
                // promote raises it.
                p
            } else {
                f.steps.iter().copied().find(|s| *s > p).unwrap_or(100)
            };
            let all_there = state.rollouts().iter().all(|r| *r == to);
            if state.enabled && all_there {
                None
            } else {
                Some((format!("on at {to}%"), Some(to)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::unleash::DEFAULT_STEPS;
    use serde_json::json;

    fn state(enabled: bool, rollouts: &[u8]) -> EnvState {
        EnvState {
            enabled,
            strategies: rollouts
                .iter()
                .map(|r| json!({"name": "flexibleRollout", "parameters": {"rollout": r.to_string(), "stickiness": "default"}}))
                .collect(),
            others: vec![],
        }
    }

    fn flag() -> Flag {
        Flag {
            project: "default".into(),
            name: "new-checkout".into(),
            environment: "production".into(),
            steps: DEFAULT_STEPS.to_vec(),
        }
    }

    #[test]
    fn steps_are_rising_percentages() {
        assert_eq!(parse_steps("10, 25,50%,100").unwrap(), [10, 25, 50, 100]);
        assert!(parse_steps("10,5").unwrap_err().contains("rise"));
        assert!(parse_steps("0,50").unwrap_err().contains("1 to 100"));
        assert!(parse_steps("ten").unwrap_err().contains("`ten`"));
        assert!(check_steps(&[]).is_err());
    }

    #[test]
    fn promote_goes_to_the_next_step_and_full_to_100() {
        let f = flag();
        assert_eq!(
            promoted(&f, &state(true, &[10]), false),
            Some(("on at 25%".into(), Some(25)))
        );
        assert_eq!(
            promoted(&f, &state(true, &[30]), false),
            Some(("on at 50%".into(), Some(50)))
        );
        assert_eq!(
            promoted(&f, &state(true, &[25]), true),
            Some(("on at 100%".into(), Some(100)))
        );
        assert_eq!(promoted(&f, &state(true, &[100]), false), None);
        // Switched off by a rollback: back on at the same percentage first.
        assert_eq!(
            promoted(&f, &state(false, &[25]), false),
            Some(("on at 25%".into(), Some(25)))
        );
        assert_eq!(
            promoted(&f, &state(false, &[]), false),
            Some(("on".into(), None))
        );
        assert_eq!(promoted(&f, &state(true, &[]), true), None);
    }

    #[test]
    fn revisions_round_trip_to_what_verification_expects() {
        for (s, want) in [
            (state(false, &[25]), (false, None)),
            (state(true, &[]), (true, None)),
            (state(true, &[50]), (true, Some(50))),
        ] {
            assert_eq!(expected(&s.revision()), Some(want));
        }
        assert_eq!(expected("v7"), None);
    }

    #[test]
    fn strategies_are_described() {
        let s = json!({"name": "flexibleRollout", "parameters": {"rollout": "25", "stickiness": "userId"}, "constraints": [{}], "disabled": false});
        assert_eq!(
            describe_strategy(&s),
            "flexibleRollout 25% (stickiness userId), 1 constraint"
        );
        assert_eq!(describe_strategy(&json!({"name": "default"})), "default");
    }
}
