//! SARIF 2.1.0 output (feature `cli`), built with `serde-sarif`: one rule per category (`blocking/<category>`),
//! one result per aggregated group, located by a path relative to the workspace root (`uriBaseId: %SRCROOT%`) so
//! that GitHub code scanning annotates the line. The user's call chain that led to the call site (the handler's
//! line first) is in `relatedLocations`, linked from the message, and in a `codeFlows` thread flow, outermost first
//! and ending at the call site, which GitHub shows as the alert's path.
//!
//! With a baseline ([`Summary::apply_baseline`]), every result has a `baselineState`: `new`, or `unchanged` for a
//! known finding, which also carries an external suppression naming the baseline file; each fixed entry is a
//! result of its own with `baselineState: absent` (kind `pass`, level `none`, no location: its line may be gone).

use serde_sarif::sarif::{
    ArtifactLocation, CodeFlow, Location, Message, MultiformatMessageString, PhysicalLocation, Region,
    ReportingConfiguration, ReportingDescriptor, Result as SarifResult, ResultBaselineState, ResultKind, ResultLevel,
    Run, Sarif, Suppression, ThreadFlow, ThreadFlowLocation, Tool, ToolComponent,
};

use super::Summary;
use super::summary::BaselineState;
use crate::catalogue::CATALOGUE;
use crate::catalogue::Level;
use crate::violation::SourceLocation;

/// The SARIF level of a blockcop level.
fn level(l: Level) -> &'static str {
    match l {
        Level::High => "error",
        Level::Medium => "warning",
        Level::Low => "note",
    }
}

/// A source line as a SARIF physical location relative to `%SRCROOT%`.
fn physical(loc: &SourceLocation) -> PhysicalLocation {
    let region = match loc.column {
        Some(c) => Region::builder().start_line(i64::from(loc.line)).start_column(i64::from(c)).build(),
        None => Region::builder().start_line(i64::from(loc.line)).build(),
    };
    PhysicalLocation::builder()
        .artifact_location(
            ArtifactLocation::builder().uri(loc.file.clone()).uri_base_id("%SRCROOT%".to_owned()).build(),
        )
        .region(region)
        .build()
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
    let mut results: Vec<SarifResult> = summary
        .groups
        .iter()
        .map(|g| {
            let mut text = g.one_line();
            // The chain without the call site (the result's own location), nearest caller first.
            let site = g.call_site.location();
            let chain: Vec<SourceLocation> = g.example.call_chain.iter().filter_map(crate::Frame::location).collect();
            let callers: Vec<SourceLocation> =
                crate::violation::callers(&g.example.call_chain, &g.call_site).into_iter().map(|(l, _)| l).collect();
            for (id, caller) in (1..).zip(&callers) {
                text.push_str(&format!(" Called from [{caller}]({id})."));
            }
            let related: Vec<Location> = (1..)
                .zip(&callers)
                .map(|(id, l)| {
                    Location::builder()
                        .id(id)
                        .physical_location(physical(l))
                        .message(Message::builder().text(format!("called from {l}")).build())
                        .build()
                })
                .collect();
            let flow = (!callers.is_empty()).then(|| {
                let locations: Vec<ThreadFlowLocation> = chain
                    .iter()
                    .map(|l| {
                        let location = Location::builder()
                            .physical_location(physical(l))
                            .message(Message::builder().text(l.to_string()).build())
                            .build();
                        ThreadFlowLocation::builder().location(location).build()
                    })
                    .collect();
                let thread = ThreadFlow::builder().locations(locations).build();
                CodeFlow::builder()
                    .message(Message::builder().text("from the handler down to the blocking call").build())
                    .thread_flows(vec![thread])
                    .build()
            });
            let result = SarifResult::builder()
                .rule_id(format!("blocking/{}", g.category))
                .level(match g.level {
                    Level::High => serde_sarif::sarif::ResultLevel::Error,
                    Level::Medium => serde_sarif::sarif::ResultLevel::Warning,
                    Level::Low => serde_sarif::sarif::ResultLevel::Note,
                })
                .message(Message::builder().text(text).build());
            let mut result = match (site, flow) {
                (Some(loc), Some(flow)) => result
                    .locations(vec![Location::builder().physical_location(physical(loc)).build()])
                    .related_locations(related)
                    .code_flows(vec![flow])
                    .build(),
                (Some(loc), None) => {
                    result.locations(vec![Location::builder().physical_location(physical(loc)).build()]).build()
                }
                (None, _) => result.build(),
            };
            if let Some(state) = g.baseline_state {
                let (state, known) = match state {
                    BaselineState::New => (ResultBaselineState::New, false),
                    BaselineState::Unchanged => (ResultBaselineState::Unchanged, true),
                };
                result.baseline_state = serde_json::to_value(state).ok();
                if known {
                    let file = summary.baseline.as_ref().and_then(|b| b.path.as_deref()).unwrap_or("the baseline");
                    result.suppressions = Some(vec![
                        Suppression::builder()
                            .kind(serde_json::json!("external"))
                            .justification(format!("a known finding of {file}"))
                            .build(),
                    ]);
                }
            }
            result
        })
        .collect();
    for fixed in summary.baseline.iter().flat_map(|b| &b.fixed) {
        let mut result = SarifResult::builder()
            .rule_id(format!("blocking/{}", fixed.category))
            .level(ResultLevel::None)
            .kind(ResultKind::Pass)
            .message(
                Message::builder()
                    .text(format!(
                        "fixed: `{}` calling `{}` (was at {}) no longer blocks; `blockcop baseline prune` removes the \
                         baseline entry",
                        fixed.function,
                        fixed.what(),
                        fixed.call_site
                    ))
                    .build(),
            )
            .build();
        result.baseline_state = serde_json::to_value(ResultBaselineState::Absent).ok();
        results.push(result);
    }
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
