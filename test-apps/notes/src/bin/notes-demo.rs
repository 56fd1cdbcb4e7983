//! `cargo xtask demo`: starts the notes app with blockcop on, drives every endpoint over loopback HTTP, and
//! prints for each the status, the `x-blocking-violations` header and the violations rendered for a human.

use blockcop::report::{Style, TextRenderer};
use blockcop::testing::TestServer;
use blockcop::{Config, Level};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let from_env = Config::from_env()?;
    let config = Config::builder().enabled(true).slow_poll_threshold(from_env.slow_poll_threshold()).build();
    let upstream = notes::upstream::spawn().await?;
    let data = tempfile::tempdir()?;
    let app = notes::app(notes::AppConfig::new(data.path(), format!("localhost:{}", upstream.port())))?;
    let server = TestServer::spawn_with(app, config).await?;
    let client = server.client();
    let renderer = TextRenderer::new(Style::for_stderr());

    println!("notes demo: {} endpoints on {}, blockcop on", notes::ENDPOINTS.len(), server.url(""));
    let (mut flagged, mut clean_twins, mut dirty_twins) = (0, 0, Vec::new());
    for (method, path, body, fixed) in notes::ENDPOINTS {
        let mut req = client.request(method.parse()?, path).expect_blocking();
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(*body);
        }
        let res = req.send().await;
        println!();
        println!("== {method} {path} -> {}", res.status());
        match res.violations() {
            None => {
                println!("   clean: no x-blocking-violations header");
                if *fixed {
                    clean_twins += 1;
                }
            }
            Some(h) => {
                println!("   x-blocking-violations: {h}");
                if *fixed {
                    dirty_twins.push(*path);
                } else if h.level >= Level::Medium {
                    flagged += 1;
                }
                if let Some(record) = res.record() {
                    let context = format!("request {method} {path}");
                    // One diagnostic per (event, call site); repeats are counted in its note.
                    let mut shown: Vec<(&str, String, usize)> = Vec::new();
                    for v in &record.violations {
                        let key = (v.event, v.call_site.to_string());
                        match shown.iter_mut().find(|(e, s, _)| (*e, s.as_str()) == (key.0, key.1.as_str())) {
                            Some(entry) => entry.2 += 1,
                            None => {
                                println!("{}", renderer.render(v, Some(&context)));
                                shown.push((key.0, key.1, 1));
                            }
                        }
                    }
                    for (event, site, n) in shown.iter().filter(|s| s.2 > 1) {
                        println!("   ({n} `{event}` violations at {site}; shown once)");
                    }
                }
            }
        }
    }
    let fixed_total = notes::ENDPOINTS.iter().filter(|e| e.3).count();
    println!();
    println!(
        "summary: {flagged} of {} blocking endpoints flagged; {clean_twins} of {fixed_total} fixed endpoints clean",
        notes::ENDPOINTS.len() - fixed_total
    );
    if !dirty_twins.is_empty() {
        return Err(format!("fixed endpoints with violations: {dirty_twins:?}").into());
    }
    Ok(())
}
