//! Shard hashing compatible with the original: Java's `String.hashCode` of the entity id, modulo the
//! number of shards. Must never change for an existing journal (read-side offsets are keyed by shard).

/// Java's `String.hashCode`: the 31-multiplier polynomial over UTF-16 code units with 32-bit wrap-around.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The shard of an entity id: `|hash mod n|`, as Pekko's default extractor computes it.
pub fn shard_of(entity_id: &str, num_shards: u32) -> u32 {
    let shards = i64::from(num_shards.max(1));
    let remainder = i64::from(java_string_hash(entity_id)) % shards;
    // |remainder| < num_shards, so it always fits.
    remainder.unsigned_abs() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_original_test_vector_with_nine_shards() {
        let shards: Vec<u32> = (0..10)
            .map(|i| shard_of(&format!("test-id-{i}"), 9))
            .collect();
        assert_eq!(shards, vec![5, 4, 3, 2, 1, 0, 8, 7, 6, 5]);
    }

    #[test]
    fn matches_the_original_with_sixteen_shards() {
        let shards: Vec<u32> = (0..10)
            .map(|i| shard_of(&format!("test-id-{i}"), 16))
            .collect();
        assert_eq!(shards, vec![7, 6, 5, 4, 3, 2, 1, 0, 15, 14]);
    }

    #[test]
    fn hashes_utf16_code_units_like_java() {
        // "hello".hashCode() == 99162322; "😀" is two UTF-16 units: 55357 * 31 + 56832.
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("😀"), 55_357 * 31 + 56_832);
    }
}
