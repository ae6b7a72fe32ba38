//! `postdesk trigger PIPELINE TRIGGER --status ID | --enable | --disable`
//! (SPEC §10): edits one status trigger of `[pipeline.triggers]` in place,
//! like the workflow edits — the trigger written as an inline table, a
//! `[pipeline.triggers.NAME]` table or inside `triggers = { ... }`.

use toml_edit::{DocumentMut, InlineTable, Item, TableLike, Value};

use super::{known, replace_keeping_decor, EditError};

/// The triggers a pipeline has (SPEC §2).
pub const TRIGGERS: [&str; 2] = ["email_sent_to_customer", "customer_replied"];

/// What to change in a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Status(String),
    Enabled(bool),
}

/// Applies `change` to trigger `name` of pipeline `pipeline`. A trigger
/// the file does not have yet is added, enabled (`--status`) or with the
/// value asked for; whether the result is valid (an enabled trigger needs
/// a status of the pipeline) is the loader's to say.
pub fn edit_trigger(
    doc: &mut DocumentMut,
    pipeline: &str,
    name: &str,
    change: &Change,
) -> Result<String, EditError> {
    if !TRIGGERS.contains(&name) {
        return Err(EditError::Unsupported(format!(
            "unknown trigger \"{name}\" (known: {})",
            TRIGGERS.join(", ")
        )));
    }
    let pipelines = match doc.get_mut("pipeline") {
        Some(Item::ArrayOfTables(a)) => a,
        _ => {
            return Err(EditError::Unsupported(
                "the config has no [[pipeline]] tables to edit".to_owned(),
            ))
        }
    };
    let ids: Vec<String> = pipelines
        .iter()
        .filter_map(|t| t.get("id").and_then(Item::as_str).map(str::to_owned))
        .collect();
    let Some(table) = pipelines
        .iter_mut()
        .find(|t| t.get("id").and_then(Item::as_str) == Some(pipeline))
    else {
        return Err(EditError::Unsupported(format!(
            "unknown pipeline \"{pipeline}\" (known: {})",
            known(ids.iter().map(String::as_str))
        )));
    };
    let what = match change {
        Change::Status(s) => format!("set_status = \"{s}\""),
        Change::Enabled(on) => format!("enabled = {on}"),
    };
    let done = format!("pipeline \"{pipeline}\": trigger {name}: {what}");

    let Some(triggers) = table.get_mut("triggers") else {
        let mut trigger = InlineTable::new();
        set(&mut trigger, change, true);
        let mut triggers = InlineTable::new();
        triggers.insert(name, Value::InlineTable(trigger));
        table.insert("triggers", Item::Value(Value::InlineTable(triggers)));
        return Ok(done);
    };
    let Some(triggers) = triggers.as_table_like_mut() else {
        return Err(EditError::Unsupported(format!(
            "pipeline \"{pipeline}\": triggers is not a table; edit it by hand"
        )));
    };
    match triggers.get_mut(name) {
        None => {
            let mut trigger = InlineTable::new();
            set(&mut trigger, change, true);
            triggers.insert(name, Item::Value(Value::InlineTable(trigger)));
        }
        Some(item) => {
            let Some(trigger) = item.as_table_like_mut() else {
                return Err(EditError::Unsupported(format!(
                    "pipeline \"{pipeline}\": trigger {name} is not a table like \
                     {{ enabled = true, set_status = \"...\" }}; edit it by hand"
                )));
            };
            set(trigger, change, false);
            if let (Change::Status(_), Some(false)) =
                (change, trigger.get("enabled").and_then(Item::as_bool))
            {
                return Ok(format!(
                    "{done} (the trigger stays disabled: --enable turns it on)"
                ));
            }
        }
    }
    Ok(done)
}

/// Writes the change into a trigger's table, keeping the decor of a value
/// that was there; `new` marks a trigger just added (`--status` enables it).
fn set(trigger: &mut dyn TableLike, change: &Change, new: bool) {
    let mut put = |key: &str, value: Value| match trigger.get_mut(key) {
        Some(Item::Value(v)) => replace_keeping_decor(v, value),
        _ => {
            trigger.insert(key, Item::Value(value));
        }
    };
    match change {
        Change::Status(status) => {
            if new {
                put("enabled", Value::from(true));
            }
            put("set_status", Value::from(status.as_str()));
        }
        Change::Enabled(on) => put("enabled", Value::from(*on)),
    }
}
