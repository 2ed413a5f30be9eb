//! CNI mode, as linkerd-cni: instead of an init container with NET_ADMIN,
//! the chained CNI plugin `tandem-cni` installs a pod's redirect when the
//! runtime makes its sandbox. A DaemonSet ([`render`], `tandem install-cni`)
//! runs `tandem cni-install` on every node, which copies the plugin into the
//! node's CNI bin dir and appends its entry to the node's CNI config.
//!
//! This module decides, on names and text only; `tandem cni-install` does
//! the reading and writing.
//!
//! - [`choose_config`]: the file containerd uses, as its CRI loads the
//!   config dir by default (`max_conf_num` 1): the first name, in byte
//!   order, ending in `.conf`, `.conflist` or `.json`.
//! - [`patch`]: our entry (see [`entry`]) at the end of `plugins`; replaced
//!   in place if it is there but differs; [`Edit::Unchanged`] if it is
//!   there as it should be. A single plugin (a `.conf` or `.json` without
//!   `plugins`) becomes a list of itself and ours, in `<stem>.conflist`.
//! - [`unpatch`]: our entries out, nothing else.
//!
//! Everything else in the file stays as it was: every top-level key in its
//! place, every value we do not touch (other plugins among them) as it was
//! written, and the file's indentation and final newline. A top-level key
//! written twice is kept once, in its first place, with the value decoders
//! read: the last.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

mod manifest;
#[cfg(test)]
mod tests;

pub use manifest::{
    BINARY_IN_IMAGE, CONTAINER, CniOptions, DEFAULT_BIN_DIR, DEFAULT_NET_DIR, MOUNTED_BIN_DIR,
    MOUNTED_NET_DIR, NAME, NAMESPACE, manifest_yaml, render,
};

/// The plugin's `type` in the CNI config, and its file name in the bin dir.
pub const PLUGIN_TYPE: &str = "tandem-cni";
/// The capability under which containerd passes the pod's annotations to
/// a plugin that declares it.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
/// The endings of the files containerd's CRI reads from the config dir.
pub const CONFIG_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

/// Whether containerd would read a file of this name as a CNI config.
pub fn is_config_file(name: &str) -> bool {
    CONFIG_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

/// The config file containerd uses, of the names in the config dir (files
/// only): the first config file in byte order, as Go sorts strings.
pub fn choose_config<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names.into_iter().filter(|n| is_config_file(n)).min()
}

/// Our entry in `plugins`.
pub fn entry() -> Value {
    let Entry {
        r#type,
        capabilities,
    } = entry_json();
    json!({ "type": r#type, "capabilities": capabilities })
}

/// Our entry as we write it: `type` first, as people write them.
#[derive(Serialize)]
struct Entry {
    r#type: &'static str,
    capabilities: Value,
}

fn entry_json() -> Entry {
    Entry {
        r#type: PLUGIN_TYPE,
        capabilities: json!({ POD_ANNOTATIONS_CAPABILITY: true }),
    }
}

/// What to do with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// It already says what it should: leave it alone.
    Unchanged,
    /// Write `text` to `file` (in the same directory). When `file` is not
    /// the file read (a single plugin made a `.conflist`), remove the file
    /// read once this one is in place.
    Write { file: PathBuf, text: String },
}

/// Why a config file cannot be patched. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: not valid JSON")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: not a JSON object")]
    NotAnObject { file: String },
    #[error("{file}: `plugins` is not a list")]
    PluginsNotAList { file: String },
    #[error("{file}: a .conflist without `plugins`")]
    NoPlugins { file: String },
    #[error("{file}: neither a plugin (no `type`) nor a list of plugins (no `plugins`)")]
    NoType { file: String },
    #[error("{file}: no plugin but {PLUGIN_TYPE}: the cluster's network must come first")]
    NothingToChain { file: String },
    #[error("{file}: cannot write the patched JSON")]
    Render {
        file: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `file` with our entry at the end of its `plugins` (see the module doc).
pub fn patch(file: &Path, text: &str) -> Result<Edit, ConfigError> {
    let Config { shape, style } = Config::parse(file, text)?;
    match shape {
        Shape::List {
            top,
            at,
            mut plugins,
        } => {
            if plugins.iter().all(is_ours) {
                return Err(ConfigError::NothingToChain {
                    file: display(file),
                });
            }
            let ours: Vec<usize> = (0..plugins.len())
                .filter(|&i| is_ours(&plugins[i]))
                .collect();
            match ours[..] {
                [] => plugins.push(Plugin::Ours(entry_json())),
                [one] if plugins[one].to_value() == Some(entry()) => {
                    return Ok(Edit::Unchanged);
                }
                // The first in place, as it should be; any others out.
                [first, ..] => {
                    plugins[first] = Plugin::Ours(entry_json());
                    let mut i = 0;
                    plugins.retain(|p| {
                        let keep = i <= first || !is_ours(p);
                        i += 1;
                        keep
                    });
                }
            }
            style.write(file, file.to_path_buf(), &top, at, &plugins)
        }
        Shape::Single { top, plugin } => {
            if is_ours(&plugin) {
                return Err(ConfigError::NothingToChain {
                    file: display(file),
                });
            }
            let list: IndexMap<String, Box<RawValue>> = ["cniVersion", "name"]
                .into_iter()
                .filter_map(|key| Some((key.to_string(), top.get(key)?.clone())))
                .collect();
            let plugins = [style.nest(file, plugin)?, Plugin::Ours(entry_json())];
            style.write(file, conflist_name(file), &list, list.len(), &plugins)
        }
    }
}

/// `file` without our entries; [`Edit::Unchanged`] if it has none. A list
/// stays a list (a converted `.conf` is not converted back).
pub fn unpatch(file: &Path, text: &str) -> Result<Edit, ConfigError> {
    let Config { shape, style } = Config::parse(file, text)?;
    match shape {
        Shape::List {
            top,
            at,
            mut plugins,
        } => {
            let before = plugins.len();
            plugins.retain(|p| !is_ours(p));
            if plugins.len() == before {
                return Ok(Edit::Unchanged);
            }
            style.write(file, file.to_path_buf(), &top, at, &plugins)
        }
        Shape::Single { .. } => Ok(Edit::Unchanged),
    }
}

/// Whether `file`'s chain holds our entry (in any form).
pub fn has_entry(file: &Path, text: &str) -> Result<bool, ConfigError> {
    Ok(match Config::parse(file, text)?.shape {
        Shape::List { plugins, .. } => plugins.iter().any(is_ours),
        Shape::Single { .. } => false,
    })
}

// === impl Config ===

/// A config file, read.
struct Config {
    shape: Shape,
    style: Style,
}

enum Shape {
    /// A list: the top-level entries as written, with `plugins` (at `at`)
    /// taken out.
    List {
        top: IndexMap<String, Box<RawValue>>,
        at: usize,
        plugins: Vec<Plugin>,
    },
    /// A single plugin (a `.conf` or `.json` without `plugins`): its
    /// entries, and the whole of it as written.
    Single {
        top: IndexMap<String, Box<RawValue>>,
        plugin: Plugin,
    },
}

impl Config {
    fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        // JSON first, then an object: two errors for two faults.
        let whole: Box<RawValue> =
            serde_json::from_str(text).map_err(|source| ConfigError::Json {
                file: display(file),
                source,
            })?;
        let mut top: IndexMap<String, Box<RawValue>> =
            serde_json::from_str(whole.get()).map_err(|_| ConfigError::NotAnObject {
                file: display(file),
            })?;
        let shape = match top.shift_remove_full("plugins") {
            Some((at, _, plugins)) => {
                let plugins: Vec<Box<RawValue>> =
                    serde_json::from_str(plugins.get()).map_err(|_| {
                        ConfigError::PluginsNotAList {
                            file: display(file),
                        }
                    })?;
                let plugins = plugins.into_iter().map(Plugin::Kept).collect();
                Shape::List { top, at, plugins }
            }
            None if file_name(file).ends_with(".conflist") => {
                return Err(ConfigError::NoPlugins {
                    file: display(file),
                });
            }
            None if type_of(&whole).is_none() => {
                return Err(ConfigError::NoType {
                    file: display(file),
                });
            }
            None => Shape::Single {
                top,
                plugin: Plugin::Kept(whole),
            },
        };
        Ok(Config {
            shape,
            style: Style::of(text),
        })
    }
}

// === impl Plugin ===

/// An entry of `plugins`: one of the file's, as written, or ours.
#[derive(Serialize)]
#[serde(untagged)]
enum Plugin {
    Kept(Box<RawValue>),
    Ours(Entry),
}

impl Plugin {
    /// The plugin as a value, for equality that does not depend on key
    /// order or spacing.
    fn to_value(&self) -> Option<Value> {
        match self {
            Plugin::Kept(raw) => serde_json::from_str(raw.get()).ok(),
            Plugin::Ours(_) => Some(entry()),
        }
    }
}

fn is_ours(plugin: &Plugin) -> bool {
    match plugin {
        Plugin::Kept(raw) => type_of(raw).as_deref() == Some(PLUGIN_TYPE),
        Plugin::Ours(_) => true,
    }
}

/// A plugin's `type`, if it is an object with a string there.
fn type_of(plugin: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Type {
        r#type: Option<String>,
    }
    serde_json::from_str::<Type>(plugin.get()).ok()?.r#type
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn display(file: &Path) -> String {
    file.display().to_string()
}

/// `10-net.conf` or `10-net.json` as `10-net.conflist`, in the same dir.
fn conflist_name(file: &Path) -> PathBuf {
    let name = file_name(file);
    let stem = name
        .strip_suffix(".conf")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    file.with_file_name(format!("{stem}.conflist"))
}

// === impl Style ===

/// How the file was written, so that a rewrite changes only what it must.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Style {
    /// The indentation unit; `None` for JSON on one line.
    indent: Option<String>,
    final_newline: bool,
}

impl Style {
    fn of(text: &str) -> Self {
        let body = text.trim_end();
        let indent = if body.contains('\n') {
            // The first indented line's leading blanks: one level.
            let found = body.lines().skip(1).find_map(|line| {
                let rest = line.trim_start_matches([' ', '\t']);
                let lead = &line[..line.len() - rest.len()];
                (!lead.is_empty() && !rest.is_empty()).then(|| lead.to_string())
            });
            Some(found.unwrap_or_else(|| "  ".into()))
        } else {
            None
        };
        Style {
            indent,
            final_newline: text.ends_with('\n'),
        }
    }

    /// A top-level plugin as an entry of `plugins`, its lines moved two
    /// levels in, where it now sits. A newline in JSON text is only ever
    /// between tokens: nothing else of it changes.
    fn nest(&self, read: &Path, plugin: Plugin) -> Result<Plugin, ConfigError> {
        let (Some(indent), Plugin::Kept(raw)) = (&self.indent, &plugin) else {
            return Ok(plugin);
        };
        let text = raw.get().replace('\n', &format!("\n{indent}{indent}"));
        let raw = RawValue::from_string(text).map_err(|source| ConfigError::Render {
            file: display(read),
            source,
        })?;
        Ok(Plugin::Kept(raw))
    }

    /// `top` with `plugins` back at `at`, each value we kept as written.
    fn write(
        &self,
        read: &Path,
        file: PathBuf,
        top: &IndexMap<String, Box<RawValue>>,
        at: usize,
        plugins: &[Plugin],
    ) -> Result<Edit, ConfigError> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Field<'a> {
            Kept(&'a RawValue),
            Plugins(&'a [Plugin]),
        }
        let mut json: IndexMap<&str, Field> = top
            .iter()
            .map(|(k, v)| (k.as_str(), Field::Kept(v)))
            .collect();
        json.shift_insert(at, "plugins", Field::Plugins(plugins));

        let mut out = vec![];
        let written = match &self.indent {
            Some(indent) => {
                let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                json.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
            }
            None => json.serialize(&mut serde_json::Serializer::new(&mut out)),
        };
        written.map_err(|source| ConfigError::Render {
            file: display(read),
            source,
        })?;
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if self.final_newline {
            text.push('\n');
        }
        Ok(Edit::Write { file, text })
    }
}
