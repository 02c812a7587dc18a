//! Constants a forward pass needs on the device (RoPE tables, the causal part of attention
//! masks), made once per backend, device and key and kept between passes, so that a training
//! step does not send them from the host again.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;

/// Entries kept at most; the oldest goes first. A run uses one or two (its sequence lengths);
/// generation token by token adds one per power of two of the length.
const CAPACITY: usize = 16;

/// Device values by backend, device and key, shared by the clones of its owner (a model and its
/// copies share one cache). Thread-safe.
#[derive(Clone, Default)]
pub(crate) struct DeviceCache {
    entries: Arc<Mutex<Vec<Box<dyn Any + Send>>>>,
}

/// One entry: the device, the key and the value, for one backend `B`.
struct Entry<B: Backend, K, V> {
    device: B::Device,
    key: K,
    value: V,
}

impl DeviceCache {
    /// The value for `key` on `device` of backend `B`, made by `make` the first time.
    pub(crate) fn get_or_make<B, K, V>(
        &self,
        device: &B::Device,
        key: K,
        make: impl FnOnce() -> V,
    ) -> V
    where
        B: Backend,
        K: PartialEq + Send + 'static,
        V: Clone + Send + 'static,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let found = entries.iter().find_map(|entry| {
            let entry = entry.downcast_ref::<Entry<B, K, V>>()?;
            (entry.device == *device && entry.key == key).then(|| entry.value.clone())
        });
        if let Some(value) = found {
            return value;
        }
        let value = make();
        if entries.len() == CAPACITY {
            entries.remove(0);
        }
        entries.push(Box::new(Entry::<B, K, V> {
            device: device.clone(),
            key,
            value: value.clone(),
        }));
        value
    }

    /// Entries held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

impl fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.entries.lock().map_or(0, |e| e.len());
        write!(f, "DeviceCache({held} entries)")
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};

    use super::{CAPACITY, DeviceCache};

    #[test]
    fn a_value_is_made_once_per_backend_and_key_and_the_oldest_goes_first() {
        let cache = DeviceCache::default();
        let device = Default::default();
        let mut made = 0;
        let mut get = |key: usize| {
            cache.get_or_make::<Flex, _, _>(&device, key, || {
                made += 1;
                key * 10
            })
        };
        assert_eq!((get(1), get(1), get(2)), (10, 10, 20));
        assert_eq!(made, 2);
        // Another backend is another entry, even for the same key and device.
        let other = cache.get_or_make::<Autodiff<Flex>, _, _>(&device, 1usize, || 99usize);
        assert_eq!(other, 99);
        assert_eq!(cache.len(), 3);
        for key in 3..3 + CAPACITY {
            cache.get_or_make::<Flex, _, _>(&device, key, || key);
        }
        assert_eq!(cache.len(), CAPACITY);
        // Key 1 of flex was the oldest: it is made again.
        assert_eq!(
            cache.get_or_make::<Flex, _, _>(&device, 1usize, || 7usize),
            7
        );
    }
}
