//! The memory engine's presence: every presence channel's members, in one
//! table beside the logs.
//!
//! One lock for the table: a join or a leave changes the table and
//! publishes its member event under it, so that the member list a join
//! answers and the channel's position it answers with agree (events after
//! the position are exactly the changes since the list). Joins and leaves
//! are rare next to publishes, which never take this lock.

use std::collections::HashMap;

use crate::{ChannelKey, presence::Member};

/// The members of every presence channel with any.
#[derive(Default)]
pub(super) struct PresenceTable {
    channels: HashMap<ChannelKey, ChannelMembers>,
}

#[derive(Default)]
struct ChannelMembers {
    /// user id → (its connections here, its info as the latest join gave it).
    users: HashMap<Box<str>, (u32, Box<str>)>,
    /// connection → its user.
    connections: HashMap<u64, Box<str>>,
}

impl PresenceTable {
    /// Records `connection`'s membership as `member`. True when it is the
    /// user's first connection on the channel: its join is news.
    pub fn join(&mut self, channel: &ChannelKey, connection: u64, member: &Member) -> bool {
        let members = self.channels.entry(channel.clone()).or_default();
        if members.connections.contains_key(&connection) {
            return false;
        }
        members
            .connections
            .insert(connection, member.user_id.clone());
        let user = members
            .users
            .entry(member.user_id.clone())
            .or_insert((0, member.user_info.clone()));
        user.0 += 1;
        user.1 = member.user_info.clone();
        user.0 == 1
    }

    /// Ends `connection`'s membership; answers its user when that was the
    /// user's last connection on the channel: its leave is news.
    pub fn leave(&mut self, channel: &ChannelKey, connection: u64) -> Option<Box<str>> {
        let members = self.channels.get_mut(channel)?;
        let user_id = members.connections.remove(&connection)?;
        let gone = match members.users.get_mut(&user_id) {
            Some((count, _)) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                members.users.remove(&user_id);
                true
            }
        };
        if members.connections.is_empty() {
            self.channels.remove(channel);
        }
        gone.then_some(user_id)
    }

    /// The channel's members.
    pub fn members(&self, channel: &ChannelKey) -> Vec<Member> {
        let Some(members) = self.channels.get(channel) else {
            return Vec::new();
        };
        let mut list: Vec<Member> = members
            .users
            .iter()
            .map(|(user_id, (_, info))| Member {
                user_id: user_id.clone(),
                user_info: info.clone(),
            })
            .collect();
        // A stable order for listings, whatever the map's.
        list.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelName;

    #[test]
    fn a_user_is_one_member_however_many_connections_it_has() {
        let channel = ChannelKey::new("s", &ChannelName::new("presence-a").unwrap());
        let mut table = PresenceTable::default();
        let ann = Member::new("ann").unwrap();
        assert!(table.join(&channel, 1, &ann));
        assert!(!table.join(&channel, 2, &ann), "a second connection");
        assert!(!table.join(&channel, 2, &ann), "the same connection again");
        assert!(table.join(&channel, 3, &Member::new("bob").unwrap()));
        assert_eq!(table.members(&channel).len(), 2);
        assert_eq!(table.leave(&channel, 1), None, "ann is still on 2");
        assert_eq!(table.leave(&channel, 1), None, "1 left already");
        assert_eq!(table.leave(&channel, 2).as_deref(), Some("ann"));
        assert_eq!(table.leave(&channel, 3).as_deref(), Some("bob"));
        assert!(
            table.channels.is_empty(),
            "nothing is kept for an empty channel"
        );
        assert_eq!(table.leave(&channel, 9), None);
    }
}
