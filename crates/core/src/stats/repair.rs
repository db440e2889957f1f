//! [`RepairStats`]: what a repairing link did about loss on its hop.

/// What a repairing link did about loss on its hop: both ends of the
/// repair loop, as seen from one side (it asks for what it missed, and
/// answers what the peer missed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepairStats {
    /// NACK datagrams this side sent (each asks for one or more packets).
    pub nacks_sent: u64,
    /// Sequence numbers those NACKs asked for.
    pub packets_asked: u64,
    /// Missing packets that arrived after being asked for, within the budget.
    pub repaired: u64,
    /// Repairs (or late originals) that arrived after their packet was
    /// given up: dropped, not delivered late.
    pub repaired_too_late: u64,
    /// Missing packets given up: a repair could no longer arrive within
    /// the budget.
    pub unrepairable: u64,
    /// Packets that arrived twice (an original after its repair, or a
    /// repair after the original): the second copy was dropped.
    pub duplicates: u64,
    /// NACK datagrams the peer sent.
    pub nacks_received: u64,
    /// Sequence numbers the peer asked for.
    pub packets_requested: u64,
    /// Packets this side sent again.
    pub retransmissions: u64,
    /// Their bytes.
    pub retransmitted_bytes: u64,
    /// Asked for but no longer kept (older than the budget, or never
    /// sent): answered with nothing.
    pub requested_gone: u64,
    /// Asked for but refused by the amplification cap (retransmissions
    /// are limited to a share of the media sent).
    pub retransmissions_capped: u64,
    /// Tail probes: a stream's last packet sent once more after it went
    /// quiet, so a loss just before a pause is seen and asked for (also
    /// counted in `retransmissions`).
    #[serde(default)]
    pub tail_probes: u64,
}

/// Field by field: both sides of a hop, or several links.
impl std::ops::Add for RepairStats {
    type Output = RepairStats;

    fn add(self, o: RepairStats) -> RepairStats {
        RepairStats {
            nacks_sent: self.nacks_sent + o.nacks_sent,
            packets_asked: self.packets_asked + o.packets_asked,
            repaired: self.repaired + o.repaired,
            repaired_too_late: self.repaired_too_late + o.repaired_too_late,
            unrepairable: self.unrepairable + o.unrepairable,
            duplicates: self.duplicates + o.duplicates,
            nacks_received: self.nacks_received + o.nacks_received,
            packets_requested: self.packets_requested + o.packets_requested,
            retransmissions: self.retransmissions + o.retransmissions,
            retransmitted_bytes: self.retransmitted_bytes + o.retransmitted_bytes,
            requested_gone: self.requested_gone + o.requested_gone,
            retransmissions_capped: self.retransmissions_capped + o.retransmissions_capped,
            tail_probes: self.tail_probes + o.tail_probes,
        }
    }
}
