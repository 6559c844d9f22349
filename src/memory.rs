//! A replica's bounded memory of what it learned about jobs (which partner
//! client a job belongs to, which action type it is of, what it delivered):
//! the newest `capacity` entries, the oldest forgotten first, and optionally
//! nothing older than a time limit. Nothing here is needed for correctness
//! across replicas: what one replica does not remember is sent by the caller
//! or resolved from AWS.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct JobMemory<V> {
    capacity: usize,
    max_age: Option<Duration>,
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    by_job: HashMap<String, (V, Instant)>,
    order: VecDeque<String>,
}

impl<V: Clone> JobMemory<V> {
    pub fn new(capacity: usize) -> Self {
        JobMemory {
            capacity,
            max_age: None,
            entries: Mutex::new(Entries {
                by_job: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// A memory whose entries are also forgotten after `max_age`.
    pub fn with_max_age(capacity: usize, max_age: Duration) -> Self {
        JobMemory {
            max_age: Some(max_age),
            ..JobMemory::new(capacity)
        }
    }

    pub fn remember(&self, job_id: &str, value: V) {
        let mut entries = self.entries.lock().expect("lock");
        let entry = (value, Instant::now());
        if entries.by_job.insert(job_id.to_owned(), entry).is_none() {
            entries.order.push_back(job_id.to_owned());
            while entries.order.len() > self.capacity {
                if let Some(oldest) = entries.order.pop_front() {
                    entries.by_job.remove(&oldest);
                }
            }
        }
    }

    pub fn get(&self, job_id: &str) -> Option<V> {
        let entries = self.entries.lock().expect("lock");
        let (value, when) = entries.by_job.get(job_id)?;
        match self.max_age {
            Some(max_age) if when.elapsed() > max_age => None,
            _ => Some(value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_number_of_jobs_newest_first() {
        let memory = JobMemory::new(3);
        for i in 0..5 {
            memory.remember(&format!("job-{i}"), i);
        }
        assert_eq!(memory.get("job-1"), None);
        assert_eq!(memory.get("job-2"), Some(2));
        memory.remember("job-4", 40);
        assert_eq!(memory.get("job-4"), Some(40));
        assert_eq!(memory.get("job-2"), Some(2), "an update is not a new entry");
    }

    #[test]
    fn forgets_entries_past_their_age() {
        let memory = JobMemory::with_max_age(3, Duration::from_millis(20));
        memory.remember("job", 1);
        assert_eq!(memory.get("job"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(memory.get("job"), None);
    }
}
