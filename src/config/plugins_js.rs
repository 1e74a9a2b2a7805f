//! The one setting the bridge reads from a Strapi project's `config/plugins.js`:
//! users-permissions `jwtManagement`, when it is written there as a string literal.
//!
//! Strapi 5 keeps the JWT mode in code, not in the database. The file is JavaScript, so it is
//! not evaluated: the first `jwtManagement:` followed by a quoted literal, outside `//` and
//! `/* */` comment lines, is taken; anything else (`env('…')`, a variable) is reported as
//! "not a literal" so `check` can say to set `[auth] jwt_management`.

use std::path::{Path, PathBuf};

/// What the project's plugin configuration says about `jwtManagement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginsJwtManagement {
    /// No plugin configuration file, or it does not mention `jwtManagement`.
    Unset,
    /// Written as a literal: its text and the file.
    Literal(String, PathBuf),
    /// Mentioned, but not as a literal the bridge can read without running the file.
    NotLiteral(PathBuf),
}

/// The plugin configuration files Strapi reads, in the order looked at.
const FILES: [&str; 2] = ["config/plugins.js", "config/plugins.ts"];

/// Reads `jwtManagement` from the project in `dir`. An unreadable file is `Unset`.
pub fn read(dir: &Path) -> PluginsJwtManagement {
    for name in FILES {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        return match find(&text) {
            Found::Nothing => PluginsJwtManagement::Unset,
            Found::Literal(value) => PluginsJwtManagement::Literal(value, path),
            Found::Other => PluginsJwtManagement::NotLiteral(path),
        };
    }
    PluginsJwtManagement::Unset
}

#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    Literal(String),
    Other,
}

fn find(text: &str) -> Found {
    let mut in_block_comment = false;
    let mut seen = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if in_block_comment {
            if trimmed.contains("*/") {
                in_block_comment = false;
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("/*") {
            in_block_comment = !trimmed.contains("*/");
            continue;
        }
        let Some(at) = line.find("jwtManagement") else {
            continue;
        };
        seen = true;
        let rest = line[at + "jwtManagement".len()..].trim_start();
        // The key may itself be quoted: 'jwtManagement': …
        let rest = rest.strip_prefix(['\'', '"']).unwrap_or(rest).trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(quote) = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"' | '`'))
        else {
            return Found::Other;
        };
        let body = &rest[1..];
        return match body.find(quote) {
            Some(end) if !body[..end].contains("${") => Found::Literal(body[..end].to_owned()),
            _ => Found::Other,
        };
    }
    if seen { Found::Other } else { Found::Nothing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_literal_of_the_strapi5_template() {
        let text = "module.exports = () => ({\n  'users-permissions': {\n    config: {\n      jwtManagement: 'refresh',\n      sessions: { httpOnly: true },\n    },\n  },\n});\n";
        assert_eq!(find(text), Found::Literal("refresh".to_owned()));
        assert_eq!(
            find("x = { \"jwtManagement\": \"legacy-support\" }"),
            Found::Literal("legacy-support".to_owned())
        );
    }

    #[test]
    fn comments_and_absence_are_unset_and_code_is_not_a_literal() {
        assert_eq!(
            find("// jwtManagement: 'refresh'\nmodule.exports = {};"),
            Found::Nothing
        );
        assert_eq!(find("/*\n jwtManagement: 'refresh'\n*/"), Found::Nothing);
        assert_eq!(find("module.exports = {};"), Found::Nothing);
        assert_eq!(
            find("jwtManagement: env('JWT_MODE', 'refresh'),"),
            Found::Other
        );
        assert_eq!(find("jwtManagement: `${mode}`,"), Found::Other);
    }

    #[test]
    fn reads_the_file_of_a_project_folder() {
        let dir = std::env::temp_dir().join(format!("plugins-js-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("config"));
        assert_eq!(read(&dir), PluginsJwtManagement::Unset);
        let file = dir.join("config/plugins.js");
        let _ = std::fs::write(&file, "module.exports = { jwtManagement: 'refresh' };");
        assert_eq!(
            read(&dir),
            PluginsJwtManagement::Literal("refresh".to_owned(), file)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
