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

    /// No `entity` key (an account without a brand of its own).
    pub fn no_entity(mut self) -> AccountConf {
        self.entity = None;
        self
    }

    pub fn licence(mut self, l: &str) -> AccountConf {
        self.licence = Some(l.to_owned());
        self
    }

    /// No `licence` key (an unlicensed account).
    pub fn no_licence(mut self) -> AccountConf {
        self.licence = None;
        self
    }

    /// `licence_expires = "<date>"` (`YYYY-MM-DD`).
    pub fn licence_expires(self, date: &str) -> AccountConf {
        self.set(&format!("licence_expires = {date:?}"))
    }

    /// `sender_id = [...]`: the source addresses (patterns) the account may use.
    pub fn sender_id(self, patterns: &[&str]) -> AccountConf {
        self.set(&format!("sender_id = {patterns:?}"))
    }

    /// `bind_types = [...]` (`"transmitter"`, `"receiver"`, `"transceiver"`).
    pub fn bind_types(self, types: &[&str]) -> AccountConf {
        self.set(&format!("bind_types = {types:?}"))
    }

    /// `signatures = [...]`: the 【signature】s its commercial messages may carry.
    pub fn signatures(self, names: &[&str]) -> AccountConf {
        self.set(&format!("signatures = {names:?}"))
    }

    /// `source_class = { "<pattern>" = "<class>", ... }`: the class by source address.
    pub fn source_class(self, by_pattern: &[(&str, &str)]) -> AccountConf {
        let pairs: Vec<String> = by_pattern.iter().map(|(p, c)| format!("{p:?} = {c:?}")).collect();
        self.set(&format!("source_class = {{ {} }}", pairs.join(", ")))
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

/// The gateway's config: `[listen]` and `[upstream]` from the constructor (more lines for
/// them by `set("listen" | "upstream", ..)`), every other section as lines set by name, then
/// the content rules, then the accounts, then free text.
#[derive(Debug, Clone)]
pub struct GwConf {
    pub smpp: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    /// `listen.smpp_tls`: the TLS listener, if any (its `[listen.tls]` by [`GwConf::listen_tls`]).
    pub smpp_tls: Option<SocketAddr>,
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
            smpp_tls: None,
            sections: BTreeMap::new(),
            rules: Vec::new(),
            accounts: Vec::new(),
            tail: String::new(),
        }
    }

    /// SMPP and admin listeners on ephemeral loopback ports (`127.0.0.1:0`): for a gateway
    /// bound in process, which reports the ports it got.
    pub fn ephemeral(upstream: SocketAddr) -> GwConf {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        GwConf::new(any, any, upstream)
    }

    /// A TLS listener on `addr` with this certificate chain and key (`[listen.tls]`; more
    /// lines, e.g. `client_ca`, by `set("listen.tls", ..)`).
    pub fn listen_tls(mut self, addr: SocketAddr, cert: &Path, key: &Path) -> GwConf {
        self.smpp_tls = Some(addr);
        self.set("listen.tls", &format!("cert = {:?}", cert.display().to_string()))
            .set("listen.tls", &format!("key = {:?}", key.display().to_string()))
    }

    /// TLS to the SMSC (`[upstream.tls]`), trusting `ca`, expecting `server_name`.
    pub fn upstream_tls(self, ca: &Path, server_name: &str) -> GwConf {
        self.set("upstream.tls", &format!("ca = {:?}", ca.display().to_string()))
            .set("upstream.tls", &format!("server_name = {server_name:?}"))
    }

    /// A `key = value` line in `[section]` (dotted for subsections: `policy.frequency`).
    pub fn set(mut self, section: &str, line: &str) -> GwConf {
        self.sections.entry(section.to_owned()).or_default().push(line.to_owned());
        self
    }

    /// [`GwConf::set`] for each line of `lines` (a caller's free-form table body).
    pub fn set_lines(mut self, section: &str, lines: &str) -> GwConf {
        for l in lines.lines() {
            self.put(section, l);
        }
        self
    }

    /// The same as [`GwConf::set`], in place.
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
        let mut t = format!("[listen]\nsmpp = \"{}\"\nadmin = \"{}\"\n", self.smpp, self.admin);
        if let Some(a) = self.smpp_tls {
            t += &format!("smpp_tls = \"{a}\"\n");
        }
        for l in self.sections.get("listen").into_iter().flatten() {
            t += l;
            t.push('\n');
        }
        t += &format!("\n[upstream]\naddress = \"{}\"\n", self.upstream);
        for l in self.sections.get("upstream").into_iter().flatten() {
            t += l;
            t.push('\n');
        }
        for (name, lines) in &self.sections {
            if name == "listen" || name == "upstream" {
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
