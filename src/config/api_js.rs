//! Reads `responses.privateAttributes` from a Strapi project's `config/api.js` (or `.ts`, and
//! the per-environment `config/env/<env>/api.*`), when it is written as a literal list.
//!
//! Strapi keeps this site-wide list in code, not in the database, so the bridge cannot see it
//! otherwise. Only a plain list of string literals is understood (`privateAttributes: ['a',
//! "b"]`); anything computed is reported as unreadable, so `check` can ask for the list in
//! `[strapi] private_attributes` instead of guessing.

use std::path::{Path, PathBuf};

/// What the Strapi project's API configuration says about `responses.privateAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ApiPrivateAttributes {
    /// No `--strapi-dir` was given.
    #[default]
    NoStrapiDir,
    /// The folder has no `config/api.js` (nor `.ts`).
    NoFile,
    /// The files were read; they set no `privateAttributes`.
    NotSet(Vec<PathBuf>),
    /// Literal lists, read from these files (their union).
    Literal(Vec<PathBuf>, Vec<String>),
    /// A file sets `privateAttributes` in a form the bridge cannot read (or could not be read).
    Unreadable(PathBuf, String),
}

impl ApiPrivateAttributes {
    /// The names to hide, when they could be read.
    pub fn names(&self) -> &[String] {
        match self {
            ApiPrivateAttributes::Literal(_, names) => names,
            _ => &[],
        }
    }
}

/// Reads the API configuration files of the Strapi project in `dir`.
pub fn read(dir: &Path) -> ApiPrivateAttributes {
    let mut files = Vec::new();
    let config = dir.join("config");
    for name in ["api.js", "api.ts"] {
        let path = config.join(name);
        if path.is_file() {
            files.push(path);
        }
    }
    if let Ok(envs) = std::fs::read_dir(config.join("env")) {
        let mut env_files: Vec<PathBuf> = envs
            .filter_map(Result::ok)
            .flat_map(|e| ["api.js", "api.ts"].map(|n| e.path().join(n)))
            .filter(|p| p.is_file())
            .collect();
        env_files.sort();
        files.extend(env_files);
    }
    if files.is_empty() {
        return ApiPrivateAttributes::NoFile;
    }
    let mut names: Vec<String> = Vec::new();
    let mut found = false;
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return ApiPrivateAttributes::Unreadable(path.clone(), e.to_string()),
        };
        match private_attributes(&text) {
            Ok(None) => {}
            Ok(Some(list)) => {
                found = true;
                for n in list {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            Err(why) => return ApiPrivateAttributes::Unreadable(path.clone(), why),
        }
    }
    if found {
        ApiPrivateAttributes::Literal(files, names)
    } else {
        ApiPrivateAttributes::NotSet(files)
    }
}

/// The union of every `privateAttributes: [...]` literal in `source`; `None` when the key is
/// not there, an error when it is there but not a list of string literals.
pub fn private_attributes(source: &str) -> Result<Option<Vec<String>>, String> {
    let code = strip_comments(source);
    let mut out: Option<Vec<String>> = None;
    let key = "privateAttributes";
    let mut from = 0;
    while let Some(at) = code[from..].find(key) {
        let start = from + at;
        from = start + key.len();
        // A whole identifier, possibly quoted: `privateAttributes:` or `'privateAttributes':`.
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = code[from..].trim_start_matches(['\'', '"']).trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            if code[from..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            return Err(format!("{key} is not set with `{key}: [...]`"));
        };
        let list = literal_list(rest.trim_start())
            .ok_or_else(|| format!("{key} is not a literal list of quoted attribute names"))?;
        let names = out.get_or_insert_with(Vec::new);
        for n in list {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Ok(out)
}

/// `['a', "b", `c`,]` at the start of `s`.
fn literal_list(s: &str) -> Option<Vec<String>> {
    let mut rest = s.strip_prefix('[')?.trim_start();
    let mut names = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            let _ = after;
            return Some(names);
        }
        let quote = rest.chars().next()?;
        if !matches!(quote, '\'' | '"' | '`') {
            return None;
        }
        let body = &rest[1..];
        let end = body.find(quote)?;
        let name = &body[..end];
        if name.contains('\\') || (quote == '`' && name.contains("${")) {
            return None;
        }
        names.push(name.to_owned());
        rest = body[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with(']') {
            return None;
        }
    }
}

/// `source` without `//` and `/* */` comments (string literals kept as they are).
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                out.push(' ');
            }
            ('\'' | '"' | '`', _) => {
                quote = Some(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_lists_and_refuses_computed_ones() {
        let js = r#"
            module.exports = ({ env }) => ({
              // privateAttributes: ['commentedOut'],
              responses: {
                privateAttributes: ['createdAt', "updatedBy", `internal`,],
              },
              rest: { defaultLimit: 25, maxLimit: 100, withCount: true },
            });"#;
        assert_eq!(
            private_attributes(js),
            Ok(Some(vec![
                "createdAt".to_owned(),
                "updatedBy".to_owned(),
                "internal".to_owned()
            ]))
        );
        let ts = "export default { responses: { 'privateAttributes': [] } };";
        assert_eq!(private_attributes(ts), Ok(Some(vec![])));
        let none = "module.exports = { rest: { defaultLimit: 25 } }; /* privateAttributes: [1] */";
        assert_eq!(private_attributes(none), Ok(None));
        for computed in [
            "module.exports = { responses: { privateAttributes: env.array('PRIVATE') } };",
            "module.exports = { responses: { privateAttributes: [...base, 'x'] } };",
            "module.exports = { responses: { privateAttributes: [`${p}x`] } };",
            "const r = { privateAttributes }; module.exports = { responses: r };",
        ] {
            assert!(private_attributes(computed).is_err(), "{computed}");
        }
    }

    #[test]
    fn reads_a_strapi_folder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()), ApiPrivateAttributes::NoFile);
        let config = dir.path().join("config");
        let prod = config.join("env").join("production");
        std::fs::create_dir_all(&prod).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(config.join("api.js"), "module.exports = { rest: {} };")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(read(dir.path()), ApiPrivateAttributes::NotSet(f) if f.len() == 1));
        std::fs::write(
            prod.join("api.js"),
            "module.exports = { responses: { privateAttributes: ['a', 'b'] } };",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()).names(), ["a", "b"]);
        std::fs::write(
            config.join("api.ts"),
            "export default { responses: { privateAttributes: list } };",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read(dir.path()),
            ApiPrivateAttributes::Unreadable(p, _) if p.ends_with("api.ts")
        ));
    }
}
