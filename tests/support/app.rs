//! A tiny instrumented service for Prometheus to scrape: canary and baseline
//! counters (`http_requests_total`, `http_request_duration_seconds_bucket`)
//! that grow with time at configured rates. The rates can change while it
//! runs (a rollback sends the canary no more traffic); the counters keep
//! what was served, as a real process's would. Listens on 127.0.0.1, stops
//! on drop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct TrackRates {
    pub requests_per_sec: f64,
    pub error_ratio: f64,
    /// Share of requests slower than 100 ms (a tenth of those are also
    /// slower than 500 ms).
    pub slow_ratio: f64,
}

impl TrackRates {
    /// `requests_per_sec` requests, `error_ratio` of them 5xx, 10% slower
    /// than 100 ms.
    pub fn new(requests_per_sec: f64, error_ratio: f64) -> TrackRates {
        TrackRates {
            requests_per_sec,
            error_ratio,
            slow_ratio: 0.1,
        }
    }

    pub fn slow(self, slow_ratio: f64) -> TrackRates {
        TrackRates { slow_ratio, ..self }
    }
}

/// What one track has served so far.
#[derive(Clone, Copy, Default)]
struct Served {
    total: f64,
    errors: f64,
    over_100ms: f64,
    over_500ms: f64,
}

struct Tracks {
    /// Baseline, canary.
    rates: [TrackRates; 2],
    served: [Served; 2],
    since: Instant,
}

impl Tracks {
    /// Adds what was served since the last call at the current rates.
    fn advance(&mut self) {
        let dt = self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        for (s, r) in self.served.iter_mut().zip(self.rates) {
            let n = r.requests_per_sec * dt;
            s.total += n;
            s.errors += n * r.error_ratio;
            s.over_100ms += n * r.slow_ratio;
            s.over_500ms += n * r.slow_ratio / 10.0;
        }
    }
}

pub struct App {
    pub port: u16,
    stop: Arc<AtomicBool>,
    tracks: Arc<Mutex<Tracks>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn render(service: &str, tracks: &mut Tracks) -> String {
    tracks.advance();
    let mut t = String::from("# TYPE http_requests_total counter\n");
    let mut b = String::from("# TYPE http_request_duration_seconds histogram\n");
    for (track, s) in ["baseline", "canary"].into_iter().zip(tracks.served) {
        let total = s.total.floor();
        let errors = s.errors.floor().min(total);
        t.push_str(&format!(
            "http_requests_total{{service=\"{service}\",track=\"{track}\",code=\"200\"}} {}\n",
            total - errors
        ));
        t.push_str(&format!("http_requests_total{{service=\"{service}\",track=\"{track}\",code=\"500\"}} {errors}\n"));
        for (le, count) in [
            ("0.1", s.total - s.over_100ms),
            ("0.5", s.total - s.over_500ms),
            ("+Inf", s.total),
        ] {
            b.push_str(&format!("http_request_duration_seconds_bucket{{service=\"{service}\",track=\"{track}\",le=\"{le}\"}} {}\n", count.floor()));
        }
    }
    t + &b
}

impl App {
    pub fn start(service: &str, baseline: TrackRates, canary: TrackRates) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let service = service.to_string();
        let started = Instant::now();
        let tracks = Arc::new(Mutex::new(Tracks {
            rates: [baseline, canary],
            served: Default::default(),
            since: started,
        }));
        let shared = tracks.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: ends when the App is dropped, and after 10 minutes at most.
            while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        let mut buf = [0u8; 2048];
                        let _ = s.read(&mut buf);
                        let body = render(&service, &mut shared.lock().unwrap());
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        App {
            port,
            stop,
            tracks,
            thread: Some(thread),
        }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on the canary serves at `rates` (zero requests after a
    /// rollback); what it served so far stays in its counters.
    pub fn set_canary(&self, rates: TrackRates) {
        let mut t = self.tracks.lock().unwrap();
        t.advance();
        t.rates[1] = rates;
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
