//! Strings with variables: `${steps.S.K}`, `${tenant}`, `${into}`, `${run.id}`,
//! `${env.NAME}`; `$${` is a literal `${`. A [`Template`] is parsed once at load (so a
//! malformed one is refused there) and rendered by the engine when its step starts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a `${...}` names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Var {
    /// `${steps.S.K}`: output K of step S (S must be a dependency of the step using it).
    Step { step: String, key: String },
    /// `${tenant}`: the runbook's tenant (the points restored from).
    Tenant,
    /// `${into}`: the target tenant (in a drill: the drill's scratch name).
    Into,
    /// `${run.id}`: the id of the run.
    RunId,
    /// `${env.NAME}`: an environment variable of the process running the run; its value
    /// is treated as a secret (redacted from the audit log).
    Env(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Step { step, key } => write!(f, "${{steps.{step}.{key}}}"),
            Var::Tenant => f.write_str("${tenant}"),
            Var::Into => f.write_str("${into}"),
            Var::RunId => f.write_str("${run.id}"),
            Var::Env(n) => write!(f, "${{env.{n}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A config string that may hold variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_var(inner: &str) -> Result<Var, String> {
    let bad = || {
        format!(
            "${{{inner}}} is not a variable: use ${{steps.STEP.KEY}}, ${{tenant}}, ${{into}}, ${{run.id}} or ${{env.NAME}}"
        )
    };
    let fields: Vec<&str> = inner.split('.').collect();
    match fields.as_slice() {
        ["tenant"] => Ok(Var::Tenant),
        ["into"] => Ok(Var::Into),
        ["run", "id"] => Ok(Var::RunId),
        ["env", name] if plain_name(name) => Ok(Var::Env(name.to_string())),
        ["steps", step, key] if plain_name(step) && plain_name(key) => Ok(Var::Step {
            step: step.to_string(),
            key: key.to_string(),
        }),
        _ => Err(bad()),
    }
}

impl Template {
    /// Parse `text`; an unclosed `${` or an unknown variable shape is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("$${") {
                lit.push_str("${");
                rest = r;
            } else if let Some(r) = after.strip_prefix("${") {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("{text:?} has a ${{ without its closing }}"))?;
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(parse_var(&r[..end])?));
                rest = &r[end + 1..];
            } else {
                lit.push('$');
                rest = &after[1..];
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The text as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables used, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Text(_) => None,
        })
    }

    /// Substitute every variable; the first one `lookup` cannot resolve is the error.
    pub fn render(&self, lookup: &dyn Fn(&Var) -> Option<String>) -> Result<String, Var> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).ok_or_else(|| v.clone())?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_escapes() {
        let t = Template::parse("http://${steps.provision.lb_ip}:8080/${tenant}/$${x} $5").unwrap();
        let vars: Vec<_> = t.vars().cloned().collect();
        assert_eq!(
            vars,
            vec![
                Var::Step {
                    step: "provision".into(),
                    key: "lb_ip".into()
                },
                Var::Tenant
            ]
        );
        let out = t
            .render(&|v| match v {
                Var::Tenant => Some("acme".into()),
                _ => Some("10.0.0.1".into()),
            })
            .unwrap();
        assert_eq!(out, "http://10.0.0.1:8080/acme/${x} $5");
        assert!(Template::parse("${steps.a}").is_err());
        assert!(Template::parse("${tenant").is_err());
        assert!(Template::parse("${nope}").is_err());
    }
}
