//! The last images answered, by journal sequence number, for the dashboard's thumbnails (`crate::ui`).
//!
//! **Invariant:** at most [`THUMBNAILS`] images, shared with the render cache (`Bytes`), so their memory is bounded
//! whatever the traffic.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// How many served images the dashboard can show (the newest).
pub const THUMBNAILS: usize = 32;

/// The last images answered, by journal sequence number.
pub(crate) struct Thumbnails {
    capacity: usize,
    images: Mutex<VecDeque<(u64, &'static str, Bytes)>>,
}

impl Thumbnails {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            images: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Keeps the image answered to request `seq`, dropping the oldest past the capacity.
    pub fn put(&self, seq: u64, content_type: &'static str, bytes: Bytes) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.images.lock().unwrap();
        if g.len() >= self.capacity {
            g.pop_front();
        }
        g.push_back((seq, content_type, bytes));
    }

    pub fn get(&self, seq: u64) -> Option<(&'static str, Bytes)> {
        self.images
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _, _)| *s == seq)
            .map(|(_, t, b)| (*t, b.clone()))
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.images.lock().unwrap().iter().rev().map(|(s, _, _)| *s).collect()
    }

    pub fn clear(&self) {
        self.images.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_newest_within_capacity() {
        let t = Thumbnails::new(2);
        for seq in 1..=3 {
            t.put(seq, "image/png", Bytes::from(vec![seq as u8]));
        }
        assert_eq!(t.seqs(), vec![3, 2]);
        assert!(t.get(1).is_none());
        assert_eq!(t.get(2).unwrap().1, Bytes::from(vec![2u8]));
        Thumbnails::new(0).put(1, "image/png", Bytes::new());
    }
}
