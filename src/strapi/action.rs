//! Which Strapi action a row change (or a custom emit) stands for.

use std::fmt;
use std::sync::Arc;

/// A Strapi action, as it appears in event names (`message:publish`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// INSERT into a collection type's table.
    Create,
    /// UPDATE of a collection type's entry that is not a publish transition.
    Update,
    /// DELETE of an entry (collection or single type).
    Delete,
    /// UPDATE of a draft & publish entry whose `published_at` went from null to a value.
    Publish,
    /// UPDATE of a draft & publish entry whose `published_at` went from a value to null.
    Unpublish,
    /// INSERT or UPDATE of a single type's entry that is not a publish transition.
    CreateOrUpdate,
    /// An action named by a custom emit (`api::message.message.someCustomAction`).
    Custom(Arc<str>),
}

impl Action {
    /// The data actions, in the order the README lists them.
    pub const DATA: [Action; 6] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Publish,
        Action::Unpublish,
        Action::CreateOrUpdate,
    ];

    /// The name used in event names and in `content_types` filters.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Publish => "publish",
            Action::Unpublish => "unpublish",
            Action::CreateOrUpdate => "createOrUpdate",
            Action::Custom(name) => name,
        }
    }

    /// The data action with this name; anything else is a custom action.
    pub fn from_name(name: &str) -> Action {
        Action::DATA
            .into_iter()
            .find(|a| a.as_str() == name)
            .unwrap_or_else(|| Action::Custom(Arc::from(name)))
    }

    /// The users-permissions action a role needs under the plugin's rule
    /// (`permission_mode = "action"`): publish and createOrUpdate need `update`, unpublish
    /// needs `delete`, every other action needs itself.
    pub fn plugin_permission(&self) -> &str {
        match self {
            Action::Publish | Action::CreateOrUpdate => "update",
            Action::Unpublish => "delete",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_custom() {
        for a in Action::DATA {
            assert_eq!(Action::from_name(a.as_str()), a);
        }
        assert_eq!(
            Action::from_name("someCustomAction"),
            Action::Custom(Arc::from("someCustomAction"))
        );
    }

    #[test]
    fn plugin_rule_maps_publish_transitions() {
        assert_eq!(Action::Publish.plugin_permission(), "update");
        assert_eq!(Action::CreateOrUpdate.plugin_permission(), "update");
        assert_eq!(Action::Unpublish.plugin_permission(), "delete");
        assert_eq!(Action::Create.plugin_permission(), "create");
        assert_eq!(Action::Custom(Arc::from("x")).plugin_permission(), "x");
    }
}
