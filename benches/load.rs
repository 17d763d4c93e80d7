//! The load generator's command line (issue 5):
//!
//! ```sh
//! cargo bench --bench load -- mqtt-pubsub --target 127.0.0.1:1883 --tokens tokens.txt \
//!     --publishers 4 --subscribers 4 --qos 1 --duration 10
//! cargo bench --bench load -- xmpp-login --target 127.0.0.1:5222 --tokens tokens.txt \
//!     --user-pattern bench@localhost --count 2000
//! cargo bench --bench load -- xmpp-chat --auth scram-sha-256 --password secret \
//!     --users 8 --pairs 4 --duration 10
//! cargo bench --bench load -- bridge --target 127.0.0.1:1883 --xmpp-target 127.0.0.1:5222 \
//!     --tokens tokens.txt --users 100 --pairs 100 --rate 100 --duration 10
//! cargo bench --bench load -- --help
//! ```
//!
//! The engine is `petrel::loadgen`; this file only parses the options, shows
//! live progress (indicatif), prints a table, and writes the JSON report and
//! an SVG chart (plotters: throughput over time, latency histogram). With
//! no scenario — which is how a bare `cargo bench` runs every bench target —
//! it prints its usage and exits 0, so `cargo bench` stays the micro benches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use petrel::loadgen::report::{Bucket, LatencySummary};
use petrel::loadgen::stats::Phase;
use petrel::loadgen::{self, Options, Progress, Report, Scenario};

fn main() -> ExitCode {
    // `cargo bench -- FILTER` hands every bench target the same arguments;
    // unless they name one of our scenarios (or ask for help) they are meant
    // for the micro benches, and this target just says how to use it.
    let args: Vec<String> = std::env::args().collect();
    let ours = args.iter().skip(1).any(|a| {
        Scenario::value_variants()
            .iter()
            .any(|s| s.name() == a.as_str())
            || a == "-h"
            || a == "--help"
    });
    if !ours {
        println!("load: no scenario given, nothing to run (this is the load generator, not a micro bench).");
        // A bare run (`cargo bench --bench load` passes only `--bench`)
        // shows the usage; filters meant for the micro benches do not.
        if args.iter().skip(1).all(|a| a == "--bench") {
            println!();
            let _ = Options::command().print_help();
            println!();
        }
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse_from_args(std::env::args_os()) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let plan = match options.plan() {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            let _ = Options::command().print_help();
            println!();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = options.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = Arc::new(Progress::new());
    let bar = live_progress(&options, plan.scenario, plan.duration, progress.clone());
    let result = rt.block_on(loadgen::run(&plan, progress.clone()));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_table(&report);
    let json_path = options.out.clone().unwrap_or_else(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("target/load/{}-{unix}.json", plan.scenario.name()))
    });
    if let Err(e) = write_outputs(&report, &json_path) {
        eprintln!("load: writing {}: {e}", json_path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A progress bar fed by polling the engine's counters on a plain thread.
fn live_progress(
    options: &Options,
    scenario: Scenario,
    duration: Duration,
    progress: Arc<Progress>,
) -> ProgressBar {
    let bar = if options.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix:<10} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let b = bar.clone();
    std::thread::spawn(move || {
        let mut last = (0u64, 0u64, std::time::Instant::now());
        let mut running_since = None;
        // Bounded by the engine's own bounds: it ends when the run is Done
        // or the bar was finished.
        while !b.is_finished() && progress.phase() != Phase::Done {
            let p = &progress;
            let (ok, failed) = (
                Progress::get(&p.connects_ok),
                Progress::get(&p.connects_failed),
            );
            let (sent, rx) = (Progress::get(&p.sent), Progress::get(&p.received));
            let dt = last.2.elapsed().as_secs_f64().max(1e-3);
            let (sent_rate, rx_rate) = ((sent - last.0) as f64 / dt, (rx - last.1) as f64 / dt);
            last = (sent, rx, std::time::Instant::now());
            let phase = p.phase();
            b.set_prefix(format!("{phase:?}").to_lowercase());
            match phase {
                Phase::Connecting => {
                    b.set_length(Progress::get(&p.goal));
                    b.set_position(ok + failed);
                }
                Phase::Running => {
                    let since = *running_since.get_or_insert_with(std::time::Instant::now);
                    b.set_length(duration.as_millis() as u64);
                    b.set_position(
                        (since.elapsed().as_millis() as u64).min(duration.as_millis() as u64),
                    );
                }
                _ => {}
            }
            b.set_message(match scenario {
                Scenario::MqttConn | Scenario::XmppLogin => format!(
                    "connected {} ok {ok} failed {failed} dropped {}",
                    Progress::get(&p.connected),
                    Progress::get(&p.dropped)
                ),
                Scenario::XmppChat => format!(
                    "sent {sent} ({sent_rate:.0}/s) received {rx} ({rx_rate:.0}/s), logins {ok} ok {failed} failed"
                ),
                Scenario::MqttStorm => format!(
                    "connects {ok} ok {failed} failed, queued {sent} acked {}, received {rx}",
                    Progress::get(&p.acked)
                ),
                Scenario::MqttPubSub | Scenario::Bridge | Scenario::BridgeBack => format!(
                    "sent {sent} ({:.0}/s) received {rx} ({:.0}/s) acked {}",
                    sent_rate,
                    rx_rate,
                    Progress::get(&p.acked)
                ),
            });
            b.tick();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    bar
}

fn lat_row(name: &str, l: &LatencySummary) {
    println!(
        "  {name:<22} p50 {:>9.1} µs  p90 {:>9.1}  p99 {:>9.1}  max {:>9.1}  (n={})",
        l.p50_us, l.p90_us, l.p99_us, l.max_us, l.count
    );
}

fn print_table(r: &Report) {
    let s = &r.setup;
    let protocol = match s.mqtt_version {
        Some(v) => format!("MQTT {v}"),
        None => "XMPP".to_string(),
    };
    let xmpp = s.mqtt_version.is_none();
    let bridge = s.xmpp_target.is_some();
    println!(
        "\n{} against {}{} ({protocol}, auth {}) for {:.1} s, wall {:.1} s",
        s.scenario,
        s.target,
        if s.tls {
            " over TLS"
        } else if s.starttls {
            " with STARTTLS"
        } else {
            ""
        },
        serde_json::to_value(s.auth)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        s.duration_s,
        r.wall_s
    );
    let c = &r.connects;
    println!(
        "  {:<22} {} ok, {} failed, {} dropped; {:.0}/s over {:.2} s",
        if xmpp { "logins" } else { "connections" },
        c.ok,
        c.failed,
        c.dropped,
        c.per_s,
        c.connect_phase_s
    );
    lat_row(
        if xmpp {
            "login latency"
        } else {
            "connect latency"
        },
        &c.latency,
    );
    if let Some(m) = &r.messages {
        if let (true, Some(pairs)) = (bridge, s.pairs) {
            let (from, to) = if s.scenario == "bridge" {
                ("MQTT publishers", "XMPP sessions subscribed to the nodes")
            } else {
                ("XMPP sessions publishing items", "MQTT subscribers")
            };
            println!(
                "  {:<22} {pairs} {from} ({}) → {pairs} {to} ({}), XMPP at {}, QoS {}, {} B payload, window {}",
                "layout",
                s.topic_pattern.as_deref().unwrap_or(""),
                s.node_pattern.as_deref().unwrap_or(""),
                s.xmpp_target.as_deref().unwrap_or(""),
                s.qos.unwrap_or(0),
                s.payload_bytes.unwrap_or(0),
                s.inflight.unwrap_or(0)
            );
        } else if let Some(pairs) = s.pairs {
            println!(
                "  {:<22} {pairs} pairs of sessions, to the partner's {} JID, {} character bodies, window {}",
                "layout",
                if s.to_bare == Some(true) { "bare" } else { "full" },
                s.payload_bytes.unwrap_or(0),
                s.inflight.unwrap_or(0)
            );
        } else {
            println!(
                "  {:<22} {} publishers → {} subscribers, {}, QoS {}, {} B payload",
                "layout",
                s.publishers.unwrap_or(0),
                s.subscribers.unwrap_or(0),
                s.layout.map(|l| format!("{l:?}")).unwrap_or_default(),
                s.qos.unwrap_or(0),
                s.payload_bytes.unwrap_or(0)
            );
        }
        println!(
            "  {:<22} {:>12} ({:.0}/s over {:.2} s)",
            "sent", m.sent, m.sent_per_s, m.send_phase_s
        );
        println!(
            "  {:<22} {:>12} ({:.0}/s over {:.2} s, {:.1} MB/s payload)",
            "received",
            m.received,
            m.received_per_s,
            m.receive_phase_s,
            m.received_bytes_per_s / 1e6
        );
        println!(
            "  {:<22} expected {}, lost {}, duplicates {}, reordered {}, unexpected {}",
            "delivery", m.expected, m.lost, m.duplicates, m.reordered, m.unexpected
        );
        lat_row("end-to-end latency", &m.latency);
        if m.ack_latency.count > 0 {
            lat_row("ack latency", &m.ack_latency);
        }
        let worst = m
            .per_subscriber
            .iter()
            .max_by_key(|f| f.lost + f.duplicates);
        if let Some(w) = worst.filter(|w| w.lost + w.duplicates > 0) {
            println!(
                "  {:<22} {} {}: lost {}, duplicates {}",
                if xmpp {
                    "worst receiver"
                } else {
                    "worst subscriber"
                },
                if xmpp { "session" } else { "subscriber" },
                w.index,
                w.lost,
                w.duplicates
            );
        }
    }
    if let Some(st) = &r.storm {
        let secs = |v: Option<f64>| v.map_or("not all".to_string(), |s| format!("{s:.2} s"));
        println!(
            "  {:<22} {} devices, Session Expiry {} s, {} queued each: {} acknowledged in {:.2} s",
            "before the storm",
            st.devices,
            st.session_expiry_s,
            st.queued_per_device,
            st.queued_acked,
            st.queue_phase_s
        );
        println!(
            "  {:<22} {} back ({} failed), {} sessions found; all back after {}",
            "reconnects",
            st.reconnected,
            st.failed,
            st.sessions_resumed,
            secs(st.all_back_s)
        );
        println!(
            "  {:<22} {} of {} received, lost {}, duplicates {}; {} devices complete, all after {}",
            "queued messages",
            st.received,
            st.expected,
            st.lost,
            st.duplicates,
            st.devices_complete,
            secs(st.all_delivered_s)
        );
        if let (Some(b), Some(p)) = (st.rss_before_bytes, st.rss_peak_bytes) {
            println!(
                "  {:<22} {:.1} MB before the storm, {:.1} MB at its peak",
                "broker RSS",
                b as f64 / 1e6,
                p as f64 / 1e6
            );
        }
    }
    if let Some(mem) = &r.memory {
        println!(
            "  {:<22} pid {}: {:.1} MB before, {:.1} MB with {} held: {:.0} bytes per connection",
            "broker RSS",
            mem.pid,
            mem.rss_before_bytes as f64 / 1e6,
            mem.rss_held_bytes as f64 / 1e6,
            mem.connections_held,
            mem.bytes_per_connection
        );
    }
    for p in &r.processes {
        println!(
            "  {:<22} pid {}: {:.2} CPU s in {:.1} s ({:.2} cores), RSS {:.1} → {:.1} MB",
            format!("{} process", p.role),
            p.pid,
            p.cpu_s,
            p.window_s,
            p.cpu_cores_used,
            p.rss_start_bytes as f64 / 1e6,
            p.rss_end_bytes as f64 / 1e6
        );
    }
    if let Some(busy) = r.system_busy_cores {
        let ours: f64 = r.processes.iter().map(|p| p.cpu_cores_used).sum();
        println!(
            "  {:<22} {:.2} of {} cores busy, {:.2} of them outside the processes above",
            "machine",
            busy,
            r.machine_cores,
            (busy - ours).max(0.0)
        );
    }
    for (e, n) in &r.errors {
        println!("  {:<22} {n} × {e}", "error");
    }
}

fn write_outputs(r: &Report, json: &Path) -> std::io::Result<()> {
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        json,
        serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    let svg = json.with_extension("svg");
    chart(r, &svg).map_err(|e| std::io::Error::other(e.to_string()))?;
    println!("\n  report {}\n  chart  {}", json.display(), svg.display());
    Ok(())
}

/// A named, coloured line of (x, y) points.
type Series = (&'static str, plotters::style::RGBColor, Vec<(f64, f64)>);

/// Throughput over time on top, latency histogram below.
fn chart(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let rates = r.rates();
    let pubsub = r.messages.is_some();
    let series: Vec<Series> = if pubsub {
        vec![
            ("sent/s", BLUE, rates.iter().map(|x| (x.0, x.1)).collect()),
            (
                "received/s",
                RED,
                rates.iter().map(|x| (x.0, x.2)).collect(),
            ),
        ]
    } else {
        vec![
            (
                if r.setup.mqtt_version.is_none() {
                    "logins/s"
                } else {
                    "connects/s"
                },
                BLUE,
                rates.iter().map(|x| (x.0, x.3)).collect(),
            ),
            (
                "connected",
                RED,
                r.timeline
                    .iter()
                    .map(|s| (s.t_s, s.connected as f64))
                    .collect(),
            ),
        ]
    };
    let t_max = r.timeline.last().map_or(1.0, |s| s.t_s).max(0.1);
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} — throughput over time ({})",
                r.setup.scenario, r.setup.target
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    c.configure_mesh()
        .x_desc("seconds since start")
        .y_desc(if pubsub {
            "messages/s"
        } else {
            "per second / open"
        })
        .draw()?;
    for (name, color, points) in series {
        c.draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let (buckets, what): (&[Bucket], &str) = match &r.messages {
        Some(m) => (&m.latency_buckets, "end-to-end latency"),
        None if r.setup.mqtt_version.is_none() => (&r.connect_buckets, "login latency"),
        None => (&r.connect_buckets, "connect latency"),
    };
    let lo = buckets.first().map_or(1.0, |b| b.le_us / 1.25).max(0.5);
    let hi = buckets.last().map_or(10.0, |b| b.le_us).max(lo * 2.0);
    let count_max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut h = ChartBuilder::on(&bottom)
        .caption(
            format!("{what} histogram (µs, log scale)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..count_max)?;
    h.configure_mesh().x_desc("µs").y_desc("samples").draw()?;
    h.draw_series(buckets.iter().map(|b| {
        Rectangle::new(
            [(b.le_us / 1.25, 0.0), (b.le_us, b.count as f64)],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}
