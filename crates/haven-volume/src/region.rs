//! Regions: the unit of dirty tracking, resync and checksums (64 KiB), and a bitmap of them.

/// Bytes per region. A 4 GiB volume has 65,536 regions (an 8 KiB bitmap).
pub const REGION_SIZE: u64 = 64 << 10;

/// Regions touched by the byte range `offset .. offset + len`.
pub fn regions_of(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return offset / REGION_SIZE..offset / REGION_SIZE;
    }
    offset / REGION_SIZE..(offset + len - 1) / REGION_SIZE + 1
}

/// Number of regions of a volume of `size` bytes.
pub fn region_count(size: u64) -> u64 {
    size.div_ceil(REGION_SIZE)
}

/// A set of regions as a bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionMap {
    bits: Vec<u64>,
}

impl RegionMap {
    pub fn new(regions: u64) -> RegionMap {
        RegionMap {
            bits: vec![0; regions.div_ceil(64) as usize],
        }
    }
    pub fn full(regions: u64) -> RegionMap {
        let mut map = RegionMap::new(regions);
        for region in 0..regions {
            map.insert(region);
        }
        map
    }
    /// Marks `region`; true when it was not marked before.
    pub fn insert(&mut self, region: u64) -> bool {
        let (word, bit) = ((region / 64) as usize, region % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        !was
    }
    pub fn contains(&self, region: u64) -> bool {
        let (word, bit) = ((region / 64) as usize, region % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
    pub fn union_with(&mut self, other: &RegionMap) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
            *mine |= theirs;
        }
    }
    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }
    /// The bitmap as little-endian words (what the wire and the store keep).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bits.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
    pub fn from_bytes(bytes: &[u8]) -> RegionMap {
        RegionMap {
            bits: bytes
                .chunks(8)
                .map(|c| {
                    let mut word = [0u8; 8];
                    word[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(word)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_the_regions_they_touch() {
        assert_eq!(regions_of(0, 1), 0..1);
        assert_eq!(regions_of(REGION_SIZE - 1, 2), 0..2);
        assert_eq!(regions_of(REGION_SIZE, REGION_SIZE), 1..2);
        assert_eq!(regions_of(5, 0), 0..0);
    }

    #[test]
    fn a_map_round_trips_and_unions() {
        let mut a = RegionMap::new(200);
        assert!(a.insert(3));
        assert!(!a.insert(3));
        a.insert(130);
        let mut b = RegionMap::from_bytes(&a.to_bytes());
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![3, 130]);
        let mut c = RegionMap::new(200);
        c.insert(7);
        b.union_with(&c);
        assert_eq!(b.len(), 3);
        assert!(b.contains(7) && !b.contains(8));
    }
}
