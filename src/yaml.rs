//! YAML configuration files into typed settings, with errors that name the
//! field: the text goes to a generic tree first, then through
//! serde_path_to_error into the typed struct. Shared by the kubelet config
//! and the web config.

use serde::de::DeserializeOwned;

#[derive(Debug, PartialEq, Eq)]
pub enum YamlError {
    /// Not YAML at all.
    Syntax(String),
    /// YAML, but not a mapping at the top level.
    NotAMapping,
    /// A field of the wrong type, or an unknown one where they are refused.
    Field { path: String, message: String },
}

/// Parses `text`; an empty document is `T::default()`.
pub fn from_str<T: DeserializeOwned + Default>(text: &str) -> Result<T, YamlError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    match tree {
        serde_json::Value::Null => Ok(T::default()),
        serde_json::Value::Object(_) => {
            serde_path_to_error::deserialize(tree).map_err(|e| YamlError::Field {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })
        }
        _ => Err(YamlError::NotAMapping),
    }
}
