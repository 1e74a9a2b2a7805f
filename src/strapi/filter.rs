//! `content_types` resolved against the catalog: which (content type, action) pairs produce
//! events.
//!
//! Keys are uids (`api::message.message`, `plugin::users-permissions.user`) or singularNames
//! (`message`). A singularName is looked up among the site's `api::` types first (the plugin's
//! `contentTypes` keys were API names, which only `api::` types have), then among all types;
//! two matches at the same step make the key ambiguous, and the uid must be written instead.
//! `"*"` selects every `api::` type: Strapi's own `plugin::` types (users, files) only emit
//! when named. `admin::` types (admin users, roles, API and transfer tokens with their key
//! hashes) never emit, even when named: Strapi's content API never exposes them; such a key is
//! left out with a warning (and `check` lists it).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::config::{ActionFilter, ContentTypesConfig};

use super::Action;
use super::catalog::{Catalog, ContentType, is_admin_uid};

/// Actions as a bit set, bit `i` = `Action::DATA[i]`, then `find` and `findOne`.
type ActionSet = u16;

/// The read actions, after the data actions in [`ActionSet`]: events of REST reads through
/// the proxy.
const READ: [&str; 2] = ["find", "findOne"];

const ALL_ACTIONS: ActionSet = (1 << (Action::DATA.len() + READ.len())) - 1;

fn bit(action: &Action) -> ActionSet {
    if let Action::Custom(name) = action {
        return read_bit(name);
    }
    Action::DATA
        .iter()
        .position(|a| a == action)
        .map_or(0, |i| 1 << i)
}

fn read_bit(name: &str) -> ActionSet {
    READ.iter()
        .position(|a| *a == name)
        .map_or(0, |i| 1 << (Action::DATA.len() + i))
}

/// Which events go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `content_types` not set: no data events (as the plugin without configuration).
    Nothing,
    /// `"*"`: every action of every `api::` type.
    AllApi,
    /// Per uid, the actions that go out.
    Some(HashMap<String, ActionSet>),
}

impl Filter {
    /// Whether `action` on `ct` produces an event. Custom actions are never filtered here.
    pub(crate) fn wants(&self, ct: &ContentType, action: &Action) -> bool {
        if ct.is_admin() {
            return false;
        }
        match self {
            Filter::Nothing => false,
            Filter::AllApi => ct.is_api(),
            Filter::Some(map) => map.get(&ct.uid).is_some_and(|set| set & bit(action) != 0),
        }
    }

    /// Whether any action of `ct` produces events (its table must be in the publication).
    pub(crate) fn selects(&self, ct: &ContentType) -> bool {
        if ct.is_admin() {
            return false;
        }
        match self {
            Filter::Nothing => false,
            Filter::AllApi => ct.is_api(),
            Filter::Some(map) => map.contains_key(&ct.uid),
        }
    }
}

/// A `content_types` key that names no content type, or more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// No content type has this uid or singularName.
    Unknown(String),
    /// Several content types have this singularName.
    Ambiguous(String, Vec<String>),
}

/// Resolves `cfg` against `catalog`. Keys that resolve are in the filter; the others are
/// returned for the caller to refuse (at start) or warn about (after a reload).
pub(crate) fn resolve(cfg: &ContentTypesConfig, catalog: &Catalog) -> (Filter, Vec<KeyProblem>) {
    let entries = match cfg {
        ContentTypesConfig::Unset => return (Filter::Nothing, Vec::new()),
        ContentTypesConfig::All => return (Filter::AllApi, Vec::new()),
        ContentTypesConfig::Some(entries) => entries,
    };
    let mut map: HashMap<String, ActionSet> = HashMap::new();
    let mut problems = Vec::new();
    for (key, actions) in entries {
        let set = match actions {
            ActionFilter::All => ALL_ACTIONS,
            ActionFilter::Only(list) => list
                .iter()
                .map(|name| bit(&Action::from_name(name)))
                .fold(0, |acc, b| acc | b),
        };
        match lookup(key, catalog) {
            Ok(uid) if is_admin_uid(&uid) => tracing::warn!(
                %key,
                %uid,
                "content_types names an admin:: content type: it is never emitted (Strapi's content API never exposes admin users or API tokens); remove the key"
            ),
            Ok(uid) => *map.entry(uid).or_default() |= set,
            Err(problem) => problems.push(problem),
        }
    }
    (Filter::Some(map), problems)
}

/// The `content_types` keys that name `admin::` content types, with their uids: never
/// emitted, for `check` to report.
pub(crate) fn admin_keys(cfg: &ContentTypesConfig, catalog: &Catalog) -> Vec<(String, String)> {
    let ContentTypesConfig::Some(entries) = cfg else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(key, _)| match lookup(key, catalog) {
            Ok(uid) if is_admin_uid(&uid) => Some((key.clone(), uid)),
            _ => None,
        })
        .collect()
}

fn lookup(key: &str, catalog: &Catalog) -> Result<String, KeyProblem> {
    if let Some(ct) = catalog.by_uid(key) {
        return Ok(ct.uid.clone());
    }
    let named = |api_only: bool| -> Vec<String> {
        catalog
            .content_types()
            .filter(|ct| ct.singular_name == key && (!api_only || ct.is_api()))
            .map(|ct| ct.uid.clone())
            .collect()
    };
    for api_only in [true, false] {
        let mut found = named(api_only);
        match found.len() {
            0 => continue,
            1 => return Ok(found.remove(0)),
            _ => return Err(KeyProblem::Ambiguous(key.to_owned(), found)),
        }
    }
    Err(KeyProblem::Unknown(key.to_owned()))
}

/// One sentence per problem, then the keys that would work.
pub(crate) fn describe(problems: &[KeyProblem], catalog: &Catalog) -> String {
    let mut out = String::new();
    for p in problems {
        match p {
            KeyProblem::Unknown(key) => {
                let _ = write!(out, "content_types key {key:?} names no content type; ");
            }
            KeyProblem::Ambiguous(key, uids) => {
                let _ = write!(
                    out,
                    "content_types key {key:?} is the singularName of {}; write the uid instead; ",
                    uids.join(" and ")
                );
            }
        }
    }
    out.push_str(&known_keys(catalog));
    out
}

/// `known content types: message (api::message.message), ...`.
pub(crate) fn known_keys(catalog: &Catalog) -> String {
    if catalog.is_empty() {
        return "no content types are known (has Strapi booted on this database?)".to_owned();
    }
    let api: Vec<String> = catalog
        .content_types()
        .filter(|ct| ct.is_api())
        .map(|ct| format!("{} ({})", ct.singular_name, ct.uid))
        .collect();
    let others: Vec<&str> = catalog
        .content_types()
        .filter(|ct| !ct.is_api())
        .map(|ct| ct.uid.as_str())
        .collect();
    format!(
        "known content types: {}; Strapi's own, by uid: {}",
        if api.is_empty() {
            "(none)".to_owned()
        } else {
            api.join(", ")
        },
        others.join(", ")
    )
}

/// `content_types` resolved against a catalog, for reports such as `check`.
#[derive(Debug, Clone)]
pub struct ContentTypeFilter(Filter);

impl ContentTypeFilter {
    /// Resolves the configuration; an unknown or ambiguous key is an error that lists the
    /// known keys.
    pub fn resolve(catalog: &Catalog, cfg: &ContentTypesConfig) -> Result<Self, String> {
        let (filter, problems) = resolve(cfg, catalog);
        if problems.is_empty() {
            Ok(ContentTypeFilter(filter))
        } else {
            Err(describe(&problems, catalog))
        }
    }

    /// Resolves the configuration, leaving out keys that name no content type (or several):
    /// for readers that follow catalog reloads, where the model has already warned about them.
    pub fn resolve_lenient(catalog: &Catalog, cfg: &ContentTypesConfig) -> Self {
        ContentTypeFilter(resolve(cfg, catalog).0)
    }

    /// Whether REST reads of `ct` through the proxy produce `read` (`find` or `findOne`)
    /// events: `content_types` selects the type with that action (or `"*"`).
    pub fn wants_read(&self, ct: &ContentType, read: &str) -> bool {
        let bit = read_bit(read);
        bit != 0
            && match &self.0 {
                Filter::Nothing => false,
                Filter::AllApi => ct.is_api(),
                Filter::Some(map) => map.get(&ct.uid).is_some_and(|set| set & bit != 0),
            }
    }

    /// The `content_types` keys that name `admin::` content types (never emitted), with
    /// their uids.
    pub fn admin_keys(catalog: &Catalog, cfg: &ContentTypesConfig) -> Vec<(String, String)> {
        admin_keys(cfg, catalog)
    }

    /// The data actions of `ct` that produce events.
    pub fn actions_for(&self, ct: &ContentType) -> Vec<String> {
        Action::DATA
            .iter()
            .filter(|a| self.0.wants(ct, a))
            .map(|a| a.as_str().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strapi::catalog::parse_schema;

    #[test]
    fn admin_types_never_emit_even_when_named() {
        let catalog = parse_schema(include_str!(
            "../../tests/fixtures/strapi4-content-types-schema.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let cfg = ContentTypesConfig::Some(vec![
            ("admin::api-token".to_owned(), ActionFilter::All),
            ("transfer-token".to_owned(), ActionFilter::All),
            ("message".to_owned(), ActionFilter::All),
        ]);
        let (filter, problems) = resolve(&cfg, &catalog);
        assert!(problems.is_empty(), "{problems:?}");
        let ct = |uid: &str| catalog.by_uid(uid).unwrap_or_else(|| panic!("{uid}"));
        for uid in ["admin::api-token", "admin::transfer-token", "admin::user"] {
            assert!(!filter.selects(ct(uid)), "{uid}");
            assert!(!filter.wants(ct(uid), &Action::Create), "{uid}");
        }
        assert!(filter.wants(ct("api::message.message"), &Action::Create));
        assert_eq!(
            admin_keys(&cfg, &catalog),
            [
                ("admin::api-token".to_owned(), "admin::api-token".to_owned()),
                (
                    "transfer-token".to_owned(),
                    "admin::transfer-token".to_owned()
                )
            ]
        );
    }
}
