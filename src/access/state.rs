//! The live access state behind [`AccessHandle`](super::AccessHandle): the tables, what they
//! imply (each role's and token's actions, the access-key index), the rooms cache, and every
//! decision: authentication, refresh and who receives an event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use crate::config::PermissionMode;
use crate::pgoutput::{Relation, RowOp};
use crate::strapi::{AccessTable, Action};

use super::api_token::{access_key, is_jwt_shaped};
use super::jwt::JwtVerifier;
use super::tables::Tables;
use super::text::Instant;
use super::{
    AccessConfig, AccessSnapshot, ApiToken, AuthError, Identity, Principal, Recheck, Role,
    RoomName, TokenKind, User,
};

/// Microseconds since the Unix epoch, UTC. Injected so tests can fix "now".
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// A fingerprint of an API token's `access_key` (itself a hash), kept with a connected socket
/// to notice a regenerated key without keeping the key.
pub(crate) fn key_fingerprint(access_key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    access_key.hash(&mut hasher);
    hasher.finish()
}

/// The room of an API token's sockets: `api-token:<strapi_api_tokens.id>`.
pub(crate) fn token_room(id: i64) -> RoomName {
    format!("api-token:{id}")
}

/// Entries the rooms cache holds before it starts over: content types × actions is small,
/// but custom emits may name any action, and the cache must not grow without bound.
const ROOMS_CACHE_MAX_ENTRIES: usize = 4096;

/// What an API token may read.
#[derive(Debug, Clone)]
enum Reach {
    /// `read-only`: find and findOne of everything.
    ReadOnly,
    /// `full-access`: everything.
    FullAccess,
    /// `custom`: these actions.
    Custom(HashSet<String>),
    /// Unknown type: nothing.
    Nothing,
}

/// A role that has a room.
#[derive(Debug, Clone)]
struct RoleView {
    name: String,
    actions: HashSet<String>,
}

/// A token with what it reaches.
#[derive(Debug, Clone)]
struct TokenView {
    id: i64,
    reach: Reach,
    expires_at: Option<Instant>,
}

/// What the small tables (roles, permissions, tokens) imply, rebuilt whenever one changes.
#[derive(Clone, Default)]
struct View {
    /// Roles with a name, by id.
    roles: Vec<RoleView>,
    /// Every token, by id.
    tokens: Vec<TokenView>,
    /// `access_key` → token id.
    by_access_key: HashMap<String, i64>,
}

impl View {
    fn build(t: &Tables) -> View {
        let mut role_actions: HashMap<i64, HashSet<String>> = HashMap::new();
        for link in t.permission_role_links.values() {
            let (Some(perm), Some(role)) = (link.from, link.to) else {
                continue;
            };
            if let Some(action) = t.permissions.get(&perm).and_then(|p| p.action.clone()) {
                role_actions.entry(role).or_default().insert(action);
            }
        }
        let mut role_ids: Vec<i64> = t.roles.keys().copied().collect();
        role_ids.sort_unstable();
        let roles = role_ids
            .into_iter()
            .filter_map(|id| {
                Some(RoleView {
                    name: t.roles.get(&id)?.name.clone()?,
                    actions: role_actions.remove(&id).unwrap_or_default(),
                })
            })
            .collect();

        let mut token_actions: HashMap<i64, HashSet<String>> = HashMap::new();
        for link in t.token_permission_links.values() {
            let (Some(perm), Some(token)) = (link.from, link.to) else {
                continue;
            };
            if let Some(action) = t
                .token_permissions
                .get(&perm)
                .and_then(|p| p.action.clone())
            {
                token_actions.entry(token).or_default().insert(action);
            }
        }
        let mut token_ids: Vec<i64> = t.api_tokens.keys().copied().collect();
        token_ids.sort_unstable();
        let mut tokens = Vec::with_capacity(token_ids.len());
        let mut by_access_key = HashMap::new();
        for id in token_ids {
            let Some(row) = t.api_tokens.get(&id) else {
                continue;
            };
            let reach = match row.kind {
                Some(TokenKind::ReadOnly) => Reach::ReadOnly,
                Some(TokenKind::FullAccess) => Reach::FullAccess,
                Some(TokenKind::Custom) => {
                    Reach::Custom(token_actions.remove(&id).unwrap_or_default())
                }
                None => Reach::Nothing,
            };
            if let Some(key) = &row.access_key {
                by_access_key.insert(key.clone(), id);
            }
            tokens.push(TokenView {
                id,
                reach,
                expires_at: row.expires_at,
            });
        }
        View {
            roles,
            tokens,
            by_access_key,
        }
    }
}

/// Rooms per content-type uid and action, valid until a change or the next token expiry.
#[derive(Debug, Default)]
struct RoomsCache {
    entries: HashMap<String, HashMap<Action, Arc<[RoomName]>>>,
    len: usize,
    /// The earliest expiry of a token some entry includes: after it, everything is recomputed.
    valid_until: Option<i64>,
}

impl RoomsCache {
    fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
        self.valid_until = None;
    }
}

/// Whether a token expiring at `expires_at` is expired at `now` (Strapi: `expiresAt < now`).
fn is_expired(expires_at: Option<Instant>, now: i64) -> bool {
    match expires_at {
        None | Some(Instant::Infinity) => false,
        Some(Instant::MinusInfinity) => true,
        Some(Instant::At(t)) => t < now,
    }
}

/// The live state. Held in an `RwLock`; the rooms cache has its own mutex so readers can fill
/// it.
pub(crate) struct State {
    cfg: AccessConfig,
    loaded: bool,
    tables: Tables,
    view: View,
    cache: Mutex<RoomsCache>,
    jwt: Option<JwtVerifier>,
    warned_no_jwt_secret: AtomicBool,
    warned_no_salt: AtomicBool,
    clock: Clock,
    /// View rebuilds since this state was made.
    rebuilds: u64,
}

impl Default for State {
    /// Nothing loaded: every handshake is told to come back later.
    fn default() -> State {
        State {
            cfg: AccessConfig {
                public_role_name: "Public".to_owned(),
                permission_mode: PermissionMode::Read,
                jwt_secret: None,
                jwt_management: Default::default(),
                api_token_salt: None,
            },
            loaded: false,
            tables: Tables::default(),
            view: View::default(),
            cache: Mutex::default(),
            jwt: None,
            warned_no_jwt_secret: AtomicBool::new(false),
            warned_no_salt: AtomicBool::new(false),
            clock: system_clock(),
            rebuilds: 0,
        }
    }
}

impl std::fmt::Debug for State {
    /// Counts only: no secrets, keys or hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("loaded", &self.loaded)
            .field("roles", &self.tables.roles.len())
            .field("users", &self.tables.users.len())
            .field("api_tokens", &self.tables.api_tokens.len())
            .field("permission_mode", &self.cfg.permission_mode)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A loaded state over `tables`: the one constructor both the start-up load and
    /// snapshots go through.
    pub fn new(cfg: AccessConfig, tables: Tables, clock: Clock) -> State {
        let jwt = cfg
            .jwt_secret
            .as_ref()
            .map(|s| JwtVerifier::new(s.expose()).with_mode(cfg.jwt_management));
        let view = View::build(&tables);
        State {
            cfg,
            loaded: true,
            tables,
            view,
            cache: Mutex::default(),
            jwt,
            warned_no_jwt_secret: AtomicBool::new(false),
            warned_no_salt: AtomicBool::new(false),
            clock,
            rebuilds: 0,
        }
    }

    /// [`State::new`] from a snapshot.
    pub fn from_snapshot(cfg: AccessConfig, snapshot: AccessSnapshot, clock: Clock) -> State {
        State::new(cfg, Tables::from_snapshot(snapshot), clock)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    // -----------------------------------------------------------------------------------------
    // Changes
    // -----------------------------------------------------------------------------------------

    /// Applies a row; returns the sockets it can affect. A row whose kept values did not
    /// change (only columns the bridge does not read were written) changes nothing.
    pub fn apply_row(&mut self, table: AccessTable, relation: &Relation, op: &RowOp) -> Recheck {
        let Some(applied) = self.tables.apply_row(table, relation, op) else {
            return Recheck::default();
        };
        if !applied.changed {
            return Recheck::default();
        }
        self.changed(table);
        let mut recheck = Recheck::default();
        match table {
            AccessTable::Roles => recheck.roles.extend(applied.ids),
            AccessTable::Users => recheck.users.extend(applied.ids),
            AccessTable::UserRoleLinks => recheck.users.extend(applied.users),
            AccessTable::ApiTokens => recheck.tokens.extend(applied.ids),
            // Permissions decide which rooms an event goes to, not who is in a room; only
            // subscriptions, which need read access, are checked again.
            AccessTable::Permissions
            | AccessTable::PermissionRoleLinks
            | AccessTable::ApiTokenPermissions
            | AccessTable::ApiTokenPermissionLinks => recheck.subscriptions = true,
        }
        recheck
    }

    pub fn truncate(&mut self, table: AccessTable) -> Recheck {
        debug!(table = table.table_name(), "access table truncated");
        self.tables.truncate(table);
        self.changed(table);
        match table {
            AccessTable::Roles | AccessTable::Users | AccessTable::UserRoleLinks => Recheck {
                all_users: true,
                ..Recheck::default()
            },
            AccessTable::ApiTokens => Recheck {
                all_tokens: true,
                ..Recheck::default()
            },
            _ => Recheck {
                subscriptions: true,
                ..Recheck::default()
            },
        }
    }

    pub fn set_email_confirmation(&mut self, on: bool) -> Recheck {
        if self.tables.email_confirmation == on {
            return Recheck::default();
        }
        debug!(email_confirmation = on, "users-permissions setting changed");
        self.tables.email_confirmation = on;
        Recheck {
            all_users: true,
            ..Recheck::default()
        }
    }

    /// What a changed table implies is rebuilt: the view and the rooms cache for roles,
    /// permissions and tokens; nothing for users and their role links (handshakes read those
    /// tables directly, and event rooms do not depend on them).
    fn changed(&mut self, table: AccessTable) {
        if !matches!(table, AccessTable::Users | AccessTable::UserRoleLinks) {
            self.view = View::build(&self.tables);
            self.rebuilds += 1;
            self.clear_cache();
        }
    }

    /// How often the view was rebuilt since this state was made (for tests).
    #[cfg(test)]
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    // -----------------------------------------------------------------------------------------
    // Handshake
    // -----------------------------------------------------------------------------------------

    pub fn authenticate(
        &self,
        token: Option<&str>,
        strategy: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if !self.loaded {
            return Err(AuthError::NotReady);
        }
        let token = match token {
            None | Some("") => return Ok(self.public_principal()),
            Some(token) => token,
        };
        if strategy == Some("apiToken") || !is_jwt_shaped(token) {
            self.authenticate_api_token(token)
        } else {
            self.authenticate_jwt(token)
        }
    }

    fn authenticate_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.jwt else {
            if !self.warned_no_jwt_secret.swap(true, Ordering::Relaxed) {
                warn!(
                    "a socket presented a JWT but no JWT secret is configured; set JWT_SECRET \
                     (users-permissions jwtSecret) to accept users"
                );
            }
            return Err(AuthError::InvalidToken);
        };
        let now_secs = self.now().div_euclid(1_000_000);
        let claims = verifier.verify_claims(token, now_secs).map_err(|e| {
            debug!(reason = %e, "JWT refused");
            AuthError::InvalidToken
        })?;
        let mut principal = self.user_principal(claims.id)?;
        // Expired once `now >= exp` (whole seconds, as at the handshake).
        principal.expires_at = claims
            .exp
            .map(|exp| (exp.ceil() as i64).saturating_mul(1_000_000));
        Ok(principal)
    }

    fn authenticate_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let Some(salt) = &self.cfg.api_token_salt else {
            if !self.warned_no_salt.swap(true, Ordering::Relaxed) {
                warn!(
                    "a socket presented an API token but no API token salt is configured; set \
                     API_TOKEN_SALT to accept API tokens"
                );
            }
            return Err(AuthError::InvalidToken);
        };
        let key = access_key(salt.expose(), token);
        let Some(&id) = self.view.by_access_key.get(&key) else {
            debug!("unknown API token refused");
            return Err(AuthError::InvalidToken);
        };
        self.token_principal(id)
    }

    pub fn recheck(&self, old: &Principal) -> Result<Principal, AuthError> {
        if !self.loaded {
            return Err(AuthError::NotReady);
        }
        match &old.identity {
            Identity::Public => Ok(self.public_principal()),
            Identity::User { id } => {
                if old.expires_at.is_some_and(|exp| self.now() >= exp) {
                    debug!(user = id, "JWT expired on a connected socket");
                    return Err(AuthError::InvalidToken);
                }
                let mut new = self.user_principal(*id)?;
                new.expires_at = old.expires_at;
                Ok(new)
            }
            Identity::ApiToken { id } => {
                let new = self.token_principal(*id)?;
                if new.key_fingerprint != old.key_fingerprint {
                    debug!(token = id, "API token regenerated; the old key is refused");
                    return Err(AuthError::InvalidToken);
                }
                Ok(new)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Refresh
    // -----------------------------------------------------------------------------------------

    pub fn refresh(&self, identity: &Identity) -> Result<Principal, AuthError> {
        if !self.loaded {
            return Err(AuthError::NotReady);
        }
        match identity {
            Identity::Public => Ok(self.public_principal()),
            Identity::User { id } => self.user_principal(*id),
            Identity::ApiToken { id } => self.token_principal(*id),
        }
    }

    fn public_principal(&self) -> Principal {
        Principal {
            identity: Identity::Public,
            rooms: vec![self.cfg.public_role_name.clone()],
            role: self.cfg.public_role_name.clone(),
            user_id: None,
            role_id: None,
            expires_at: None,
            key_fingerprint: None,
        }
    }

    /// The checks Strapi makes after the signature: the user exists, is confirmed when
    /// email confirmation is on, is not blocked, and has a role.
    fn user_principal(&self, id: i64) -> Result<Principal, AuthError> {
        let Some(user) = self.tables.users.get(&id) else {
            debug!(user = id, "JWT for an unknown user refused");
            return Err(AuthError::InvalidToken);
        };
        if self.tables.email_confirmation && !user.confirmed {
            debug!(user = id, "unconfirmed user refused");
            return Err(AuthError::InvalidCredentials);
        }
        if user.blocked {
            debug!(user = id, "blocked user refused");
            return Err(AuthError::InvalidCredentials);
        }
        let Some((role_id, role)) = self
            .tables
            .role_of_user(id)
            .and_then(|(role_id, role)| Some((role_id, role.name.clone()?)))
        else {
            debug!(user = id, "user without a role refused");
            return Err(AuthError::InvalidCredentials);
        };
        Ok(Principal {
            identity: Identity::User { id },
            rooms: vec![role.clone()],
            role,
            user_id: Some(id),
            role_id: Some(role_id),
            expires_at: None,
            key_fingerprint: None,
        })
    }

    fn token_principal(&self, id: i64) -> Result<Principal, AuthError> {
        let Some(token) = self.tables.api_tokens.get(&id) else {
            debug!(token = id, "unknown API token refused");
            return Err(AuthError::InvalidToken);
        };
        if is_expired(token.expires_at, self.now()) {
            debug!(token = id, "expired API token refused");
            return Err(AuthError::TokenExpired);
        }
        Ok(Principal {
            identity: Identity::ApiToken { id },
            rooms: vec![token_room(id)],
            role: token.name.clone().unwrap_or_default(),
            user_id: None,
            role_id: None,
            // Strapi: expired once `expiresAt < now`, so the first instant refused is one µs on.
            expires_at: match token.expires_at {
                Some(Instant::At(t)) => Some(t.saturating_add(1)),
                Some(Instant::MinusInfinity) => Some(i64::MIN),
                Some(Instant::Infinity) | None => None,
            },
            key_fingerprint: token.access_key.as_deref().map(key_fingerprint),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------------

    pub fn rooms_for(&self, uid: &str, action: &Action) -> Arc<[RoomName]> {
        let now = self.now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.valid_until.is_some_and(|t| now > t) || cache.len >= ROOMS_CACHE_MAX_ENTRIES {
            cache.clear();
        }
        if let Some(rooms) = cache.entries.get(uid).and_then(|m| m.get(action)) {
            return Arc::clone(rooms);
        }
        let (rooms, valid_until) = self.compute_rooms(uid, action, now);
        cache
            .entries
            .entry(uid.to_owned())
            .or_default()
            .insert(action.clone(), Arc::clone(&rooms));
        cache.len += 1;
        if let Some(t) = valid_until {
            cache.valid_until = Some(cache.valid_until.map_or(t, |v| v.min(t)));
        }
        rooms
    }

    /// The rooms allowed `action` on `uid` by the plugin's rule, whatever the permission
    /// mode (not cached: for events of REST reads, which need the exact action).
    pub fn rooms_holding(&self, uid: &str, action: &Action) -> Arc<[RoomName]> {
        self.compute_rooms_in(PermissionMode::Action, uid, action, self.now())
            .0
    }

    /// The rooms for `uid`/`action` at `now`, and until when that answer holds (the earliest
    /// expiry of an included token).
    fn compute_rooms(
        &self,
        uid: &str,
        action: &Action,
        now: i64,
    ) -> (Arc<[RoomName]>, Option<i64>) {
        self.compute_rooms_in(self.cfg.permission_mode, uid, action, now)
    }

    fn compute_rooms_in(
        &self,
        mode: PermissionMode,
        uid: &str,
        action: &Action,
        now: i64,
    ) -> (Arc<[RoomName]>, Option<i64>) {
        let needed: Vec<String> = match mode {
            PermissionMode::Read => vec![format!("{uid}.find"), format!("{uid}.findOne")],
            PermissionMode::Action => vec![format!("{uid}.{}", action.plugin_permission())],
        };
        let reads_by_default = match mode {
            PermissionMode::Read => true,
            PermissionMode::Action => {
                matches!(action.plugin_permission(), "find" | "findOne")
            }
        };
        let holds = |actions: &HashSet<String>| needed.iter().any(|a| actions.contains(a));

        let mut rooms: Vec<RoomName> = Vec::new();
        for role in &self.view.roles {
            if holds(&role.actions) && !rooms.contains(&role.name) {
                rooms.push(role.name.clone());
            }
        }
        let mut valid_until: Option<i64> = None;
        for token in &self.view.tokens {
            if is_expired(token.expires_at, now) {
                continue;
            }
            let reaches = match &token.reach {
                Reach::FullAccess => true,
                Reach::ReadOnly => reads_by_default,
                Reach::Custom(actions) => holds(actions),
                Reach::Nothing => false,
            };
            if reaches {
                rooms.push(token_room(token.id));
                if let Some(Instant::At(t)) = token.expires_at {
                    valid_until = Some(valid_until.map_or(t, |v: i64| v.min(t)));
                }
            }
        }
        (Arc::from(rooms), valid_until)
    }

    // -----------------------------------------------------------------------------------------
    // Inspection
    // -----------------------------------------------------------------------------------------

    pub fn role_names(&self) -> Vec<String> {
        self.view.roles.iter().map(|r| r.name.clone()).collect()
    }

    pub fn public_role_name(&self) -> &str {
        &self.cfg.public_role_name
    }

    /// The tables as a snapshot, every list sorted (roles, users and tokens by id; pairs by
    /// id then action).
    pub fn snapshot(&self) -> AccessSnapshot {
        let t = &self.tables;
        let mut roles: Vec<Role> = t
            .roles
            .iter()
            .map(|(&id, r)| Role {
                id,
                name: r.name.clone().unwrap_or_default(),
                kind: r.kind.clone().unwrap_or_default(),
            })
            .collect();
        roles.sort_by_key(|r| r.id);
        let mut role_permissions: Vec<(i64, String)> = t
            .permission_role_links
            .values()
            .filter_map(|l| {
                let action = t.permissions.get(&l.from?)?.action.clone()?;
                Some((l.to?, action))
            })
            .collect();
        role_permissions.sort();
        let mut users: Vec<User> = t
            .users
            .iter()
            .map(|(&id, u)| User {
                id,
                blocked: u.blocked,
                confirmed: u.confirmed,
            })
            .collect();
        users.sort_by_key(|u| u.id);
        let mut user_roles: Vec<(i64, i64)> = t
            .user_role_links
            .values()
            .filter_map(|l| Some((l.from?, l.to?)))
            .collect();
        user_roles.sort_unstable();
        let mut api_tokens: Vec<ApiToken> = t
            .api_tokens
            .iter()
            .filter_map(|(&id, r)| {
                Some(ApiToken {
                    id,
                    name: r.name.clone().unwrap_or_default(),
                    kind: r.kind?,
                    access_key: r.access_key.clone().unwrap_or_default(),
                    expires_at_unix_micros: match r.expires_at {
                        Some(Instant::At(t)) => Some(t),
                        Some(Instant::MinusInfinity) => Some(i64::MIN),
                        Some(Instant::Infinity) | None => None,
                    },
                })
            })
            .collect();
        api_tokens.sort_by_key(|t| t.id);
        let mut token_permissions: Vec<(i64, String)> = t
            .token_permission_links
            .values()
            .filter_map(|l| {
                let action = t.token_permissions.get(&l.from?)?.action.clone()?;
                Some((l.to?, action))
            })
            .collect();
        token_permissions.sort();
        AccessSnapshot {
            roles,
            role_permissions,
            users,
            user_roles,
            api_tokens,
            token_permissions,
            email_confirmation: t.email_confirmation,
        }
    }
}
