//! SetContextEx staging (kd.md §3.7): chunks of a CONTEXT arrive at offsets of a total size the
//! host announces in BytesCopied; the whole is committed when the last chunk ends at the total.

use kdproto::api::{STATUS_INVALID_PARAMETER, STATUS_UNSUCCESSFUL};

/// Largest staged context newer Windows accepts (kd.md §3.7).
pub const MAX_STAGED_CONTEXT: u32 = 0x3000;

/// What one SetContextEx chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    /// Stored; more chunks are expected.
    Staged,
    /// The last chunk arrived: the complete staged context.
    Complete(Vec<u8>),
}

/// Staging buffer for one stop.
#[derive(Debug, Clone, Default)]
pub struct ContextStager {
    buffer: Vec<u8>,
}

impl ContextStager {
    /// Applies one chunk. `Err` carries the NTSTATUS of the reply: 0xC0000001 without a prior
    /// GetContext in this stop, 0xC000000D for a bad range.
    pub fn stage(
        &mut self,
        context_sent: bool,
        offset: u32,
        byte_count: u32,
        total: u32,
        chunk: &[u8],
    ) -> Result<StageOutcome, u32> {
        if !context_sent {
            return Err(STATUS_UNSUCCESSFUL);
        }
        let end = offset.checked_add(byte_count);
        let valid = total <= MAX_STAGED_CONTEXT
            && offset < total
            && byte_count > 0
            && end.is_some_and(|end| end <= total)
            && chunk.len() >= byte_count as usize;
        if !valid {
            return Err(STATUS_INVALID_PARAMETER);
        }
        if self.buffer.len() != total as usize {
            self.buffer = vec![0; total as usize];
        }
        let (start, end) = (offset as usize, (offset + byte_count) as usize);
        self.buffer[start..end].copy_from_slice(&chunk[..byte_count as usize]);
        if end == total as usize {
            Ok(StageOutcome::Complete(std::mem::take(&mut self.buffer)))
        } else {
            Ok(StageOutcome::Staged)
        }
    }

    /// Forgets a partial context (a new stop).
    pub fn clear(&mut self) {
        self.buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntoseye_three_chunks_commit_on_the_last() {
        let mut stager = ContextStager::default();
        let context: Vec<u8> = (0..0x4D0u32).map(|i| i as u8).collect();
        assert_eq!(
            stager.stage(true, 0, 0x200, 0x4D0, &context[..0x200]),
            Ok(StageOutcome::Staged)
        );
        assert_eq!(
            stager.stage(true, 0x200, 0x200, 0x4D0, &context[0x200..0x400]),
            Ok(StageOutcome::Staged)
        );
        assert_eq!(
            stager.stage(true, 0x400, 0xD0, 0x4D0, &context[0x400..]),
            Ok(StageOutcome::Complete(context))
        );
    }

    #[test]
    fn requires_get_context_first() {
        let mut stager = ContextStager::default();
        assert_eq!(
            stager.stage(false, 0, 0x10, 0x4D0, &[0; 0x10]),
            Err(STATUS_UNSUCCESSFUL)
        );
    }

    #[test]
    fn bad_ranges_are_invalid_parameter() {
        let mut stager = ContextStager::default();
        for (offset, count, total, len) in [
            (0x4D0, 0x10, 0x4D0, 0x10), // offset not below total
            (0, 0, 0x4D0, 0),           // empty chunk
            (0x4C0, 0x20, 0x4D0, 0x20), // runs past total
            (0, 0x10, 0x3010, 0x10),    // total too large
            (0, 0x10, 0x4D0, 0x8),      // fewer data bytes than ByteCount
            (u32::MAX, 2, 0x4D0, 2),    // overflow
        ] {
            assert_eq!(
                stager.stage(true, offset, count, total, &vec![0; len]),
                Err(STATUS_INVALID_PARAMETER),
                "{offset:#x} {count:#x} {total:#x}"
            );
        }
    }

    #[test]
    fn single_chunk_commits_at_once() {
        let mut stager = ContextStager::default();
        assert_eq!(
            stager.stage(true, 0, 4, 4, &[1, 2, 3, 4]),
            Ok(StageOutcome::Complete(vec![1, 2, 3, 4]))
        );
    }
}
