//! A replica's bounded memory of what it learned about jobs (which partner
//! client a job belongs to, which action type it is of): the newest
//! `capacity` entries, the oldest forgotten first. Nothing here is needed for
//! correctness across replicas: what one replica does not remember is sent
//! by the caller or resolved from AWS.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

pub struct JobMemory<V> {
    capacity: usize,
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    by_job: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V: Clone> JobMemory<V> {
    pub fn new(capacity: usize) -> Self {
        JobMemory {
            capacity,
            entries: Mutex::new(Entries {
                by_job: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    pub fn remember(&self, job_id: &str, value: V) {
        let mut entries = self.entries.lock().expect("lock");
        if entries.by_job.insert(job_id.to_owned(), value).is_none() {
            entries.order.push_back(job_id.to_owned());
            while entries.order.len() > self.capacity {
                if let Some(oldest) = entries.order.pop_front() {
                    entries.by_job.remove(&oldest);
                }
            }
        }
    }

    pub fn get(&self, job_id: &str) -> Option<V> {
        self.entries
            .lock()
            .expect("lock")
            .by_job
            .get(job_id)
            .cloned()
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
}
