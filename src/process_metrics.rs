//! The standard `process_*` metrics (as every Prometheus client library names
//! them), read from `/proc` at each scrape. Elsewhere than Linux there is no
//! `/proc` and nothing is reported.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Kernel clock ticks per second as `/proc` reports them: `USER_HZ`, fixed
/// at 100 by the Linux ABI whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

/// One scrape's reading; a figure `/proc` did not give is left out.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    threads: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

impl Reading {
    fn now() -> Reading {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut reading = Reading::default();
        if let Some(stat) = read("/proc/self/stat") {
            let boot_time = read("/proc/stat").and_then(|s| boot_time(&s));
            reading.read_stat(&stat, boot_time);
        }
        if let Some(status) = read("/proc/self/status") {
            reading.read_status(&status);
        }
        reading.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as i64);
        reading.max_fds = read("/proc/self/limits").and_then(|limits| max_open_files(&limits));
        reading
    }

    /// `/proc/self/stat`: the command may hold spaces, so fields count from
    /// after its closing parenthesis (field 3 is the first after it).
    fn read_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<f64>().ok();
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            self.cpu_seconds = Some((user + system) / TICKS_PER_SECOND);
        }
        if let (Some(started), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + started / TICKS_PER_SECOND);
        }
    }

    fn read_status(&mut self, status: &str) {
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || value.split_whitespace().next()?.parse::<i64>().ok();
            match key {
                "VmRSS" => self.resident_bytes = number().map(|kib| kib * 1024),
                "VmSize" => self.virtual_bytes = number().map(|kib| kib * 1024),
                "Threads" => self.threads = number(),
                _ => {}
            }
        }
    }
}

fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = Reading::now();
        if let Some(seconds) = reading.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        if let Some(seconds) = reading.start_time_seconds {
            let gauge = ConstGauge::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                reading.virtual_bytes,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                reading.threads,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proc_formats() {
        let mut reading = Reading::default();
        // A command with a space and a parenthesis, as a process may name itself.
        let stat = "42 (code (gw) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 \
                    12345 1000 200 18446744073709551615";
        reading.read_stat(
            stat,
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
        );
        reading.read_status("Name:\tgw\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n");
        assert_eq!(reading.cpu_seconds, Some(4.0));
        assert!((reading.start_time_seconds.unwrap() - 1_700_000_123.45).abs() < 1e-3);
        assert_eq!(reading.resident_bytes, Some(1024 * 1024));
        assert_eq!(reading.virtual_bytes, Some(2048 * 1024));
        assert_eq!(reading.threads, Some(7));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let reading = Reading::now();
        assert!(reading.resident_bytes.unwrap() > 0);
        assert!(reading.open_fds.unwrap() > 0);
        assert!(reading.max_fds.unwrap() >= reading.open_fds.unwrap());
        assert!(reading.threads.unwrap() >= 1);
        assert!(reading.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
