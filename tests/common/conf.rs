//! One typed builder for the gateway's TOML config in tests: sections by name, accounts as
//! values, so a new key is added here once rather than in every hand-written config.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// An `[[account]]` table.
#[derive(Debug, Clone)]
pub struct AccountConf {
    pub system_id: String,
    pub entity: Option<String>,
    pub class: &'static str,
    pub licence: Option<String>,
    /// More `key = value` lines (`max_tps = 10`, `sender_id = ["1069*"]`).
    pub extra: Vec<String>,
}

impl AccountConf {
    /// A licensed marketing account whose entity is `<system_id>-co`.
    pub fn marketing(system_id: &str) -> AccountConf {
        AccountConf {
            system_id: system_id.to_owned(),
            entity: Some(format!("{system_id}-co")),
            class: "marketing",
            licence: Some(format!("B2-{system_id}")),
            extra: Vec::new(),
        }
    }

    pub fn transactional(system_id: &str) -> AccountConf {
        AccountConf { class: "transactional", ..AccountConf::marketing(system_id) }
    }

    pub fn entity(mut self, e: &str) -> AccountConf {
        self.entity = Some(e.to_owned());
        self
    }

    pub fn set(mut self, line: &str) -> AccountConf {
        self.extra.push(line.to_owned());
        self
    }

    fn text(&self) -> String {
        let mut t = format!("[[account]]\nsystem_id = {:?}\nclass = {:?}\n", self.system_id, self.class);
        if let Some(e) = &self.entity {
            t += &format!("entity = {e:?}\n");
        }
        if let Some(l) = &self.licence {
            t += &format!("licence = {l:?}\n");
        }
        for l in &self.extra {
            t += l;
            t.push('\n');
        }
        t
    }
}

/// The gateway's config: `[listen]` and `[upstream]` from the constructor, every other
/// section as lines set by name, then the accounts, then free text.
#[derive(Debug, Clone)]
pub struct GwConf {
    pub smpp: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    sections: BTreeMap<String, Vec<String>>,
    /// `[[policy.content_rule]]` tables (name, literals, action).
    rules: Vec<(String, Vec<String>, &'static str)>,
    accounts: Vec<AccountConf>,
    tail: String,
}

impl GwConf {
    pub fn new(smpp: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> GwConf {
        GwConf {
            smpp,
            admin,
            upstream,
            sections: BTreeMap::new(),
            rules: Vec::new(),
            accounts: Vec::new(),
            tail: String::new(),
        }
    }

    /// A `key = value` line in `[section]` (dotted for subsections: `policy.frequency`).
    pub fn set(mut self, section: &str, line: &str) -> GwConf {
        self.sections.entry(section.to_owned()).or_default().push(line.to_owned());
        self
    }

    /// The same, in place.
    pub fn put(&mut self, section: &str, line: &str) {
        self.sections.entry(section.to_owned()).or_default().push(line.to_owned());
    }

    /// Removes every line of `section` starting with `key`.
    pub fn unset(&mut self, section: &str, key: &str) {
        if let Some(v) = self.sections.get_mut(section) {
            v.retain(|l| !l.trim_start().starts_with(key));
        }
    }

    pub fn account(mut self, a: AccountConf) -> GwConf {
        self.accounts.push(a);
        self
    }

    pub fn accounts_mut(&mut self) -> &mut Vec<AccountConf> {
        &mut self.accounts
    }

    pub fn rule(mut self, name: &str, literals: &[&str], action: &'static str) -> GwConf {
        self.rules.push((name.to_owned(), literals.iter().map(|s| s.to_string()).collect(), action));
        self
    }

    pub fn rules_mut(&mut self) -> &mut Vec<(String, Vec<String>, &'static str)> {
        &mut self.rules
    }

    pub fn tail(mut self, text: &str) -> GwConf {
        self.tail.push_str(text);
        self
    }

    pub fn text(&self) -> String {
        let mut t = format!(
            "[listen]\nsmpp = \"{}\"\nadmin = \"{}\"\n\n[upstream]\naddress = \"{}\"\n",
            self.smpp, self.admin, self.upstream
        );
        for l in self.sections.get("upstream").into_iter().flatten() {
            t += l;
            t.push('\n');
        }
        for (name, lines) in &self.sections {
            if name == "upstream" {
                continue;
            }
            t += &format!("\n[{name}]\n");
            for l in lines {
                t += l;
                t.push('\n');
            }
        }
        for (name, literals, action) in &self.rules {
            t += &format!("\n[[policy.content_rule]]\nname = {name:?}\nliterals = {literals:?}\naction = {action:?}\n");
        }
        for a in &self.accounts {
            t.push('\n');
            t += &a.text();
        }
        t += &self.tail;
        t
    }

    pub fn write(&self, path: &Path) {
        // Written whole and renamed: a reader (the file watch) never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.text()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }
}
