//! SARIF 2.1.0 output (feature `cli`), built with `serde-sarif`: one rule per category (`blocking/<category>`),
//! one result per aggregated group, located by a path relative to the workspace root (`uriBaseId: %SRCROOT%`) so
//! that GitHub code scanning annotates the line.

use serde_sarif::sarif::{
    ArtifactLocation, Location, Message, MultiformatMessageString, PhysicalLocation, Region, ReportingConfiguration,
    ReportingDescriptor, Result as SarifResult, Run, Sarif, Tool, ToolComponent,
};

use super::Summary;
use crate::catalogue::CATALOGUE;
use crate::violation::Level;

/// The SARIF level of a blockcop level.
fn level(l: Level) -> &'static str {
    match l {
        Level::High => "error",
        Level::Medium => "warning",
        Level::Low => "note",
    }
}

/// The summary as a SARIF 2.1.0 log.
pub fn to_sarif(summary: &Summary) -> Sarif {
    let rules: Vec<ReportingDescriptor> = CATALOGUE
        .iter()
        .map(|row| {
            ReportingDescriptor::builder()
                .id(format!("blocking/{}", row.category))
                .name(row.category.as_str().to_owned())
                .short_description(
                    MultiformatMessageString::builder()
                        .text(format!("blocking {} call inside an async task", row.category))
                        .build(),
                )
                .full_description(
                    MultiformatMessageString::builder()
                        .text(format!(
                            "{}: {} (counted when: {})",
                            row.category,
                            row.functions.join(", "),
                            row.condition
                        ))
                        .build(),
                )
                .help(MultiformatMessageString::builder().text(row.fix.to_owned()).build())
                .default_configuration(
                    ReportingConfiguration::builder()
                        .level(serde_json::json!(level(Level::of(row.weight.value()))))
                        .build(),
                )
                .build()
        })
        .collect();
    let results: Vec<SarifResult> = summary
        .groups
        .iter()
        .map(|g| {
            let text = g.one_line();
            let result = SarifResult::builder()
                .rule_id(format!("blocking/{}", g.category))
                .level(match g.level {
                    Level::High => serde_sarif::sarif::ResultLevel::Error,
                    Level::Medium => serde_sarif::sarif::ResultLevel::Warning,
                    Level::Low => serde_sarif::sarif::ResultLevel::Note,
                })
                .message(Message::builder().text(text).build());
            match g.call_site.location() {
                Some(loc) => {
                    let region = match loc.column {
                        Some(c) => Region::builder().start_line(i64::from(loc.line)).start_column(i64::from(c)).build(),
                        None => Region::builder().start_line(i64::from(loc.line)).build(),
                    };
                    let physical = PhysicalLocation::builder()
                        .artifact_location(
                            ArtifactLocation::builder()
                                .uri(loc.file.clone())
                                .uri_base_id("%SRCROOT%".to_owned())
                                .build(),
                        )
                        .region(region)
                        .build();
                    result.locations(vec![Location::builder().physical_location(physical).build()]).build()
                }
                None => result.build(),
            }
        })
        .collect();
    let driver = ToolComponent::builder()
        .name("blockcop".to_owned())
        .version(env!("CARGO_PKG_VERSION").to_owned())
        .information_uri("https://crates.io/crates/blockcop".to_owned())
        .rules(rules)
        .build();
    Sarif::builder()
        .schema(serde_sarif::sarif::SCHEMA_URL.to_owned())
        .version(serde_json::json!("2.1.0"))
        .runs(vec![Run::builder().tool(Tool::builder().driver(driver).build()).results(results).build()])
        .build()
}
