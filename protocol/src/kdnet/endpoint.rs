//! One side of a KDNET conversation, without I/O: it owns the keys, the version byte and the
//! data-channel seq, and turns bodies into datagrams and back. Policy (which pokes to answer, when
//! to re-handshake, KD reliability) belongs to the link layer that drives it.

use bytes::Bytes;

use super::control::{ControlMessage, Poke, Response};
use super::data::DataBody;
use super::datagram::{self, Channel, Datagram, Direction, Keys};
use super::key::Key;
use crate::{Error, Result, Role};

/// A datagram that decrypted, authenticated and came from the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The whole datagram is kept: [`Endpoint::accept_poke`] and [`Endpoint::accept_response`]
    /// need its version, seq and raw body.
    Control {
        datagram: Datagram,
        message: ControlMessage,
    },
    Data {
        seq: u64,
        body: DataBody,
    },
}

/// The poke a target last sent, to check the Response against (kdnet.md §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SentPoke {
    seq: u64,
    client_key: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    role: Role,
    keys: Keys,
    version: u8,
    /// Seq of the next data datagram we send (kdnet.md §4.1).
    next_data_seq: u64,
    last_poke: Option<SentPoke>,
}

impl Endpoint {
    /// A host. Its version byte is copied from the first poke it answers (kdnet.md §1.2).
    pub fn host(key: Key) -> Self {
        Self::new(Role::Host, key, 0)
    }

    /// A target speaking protocol `version` (2, 4 and 5 are seen; kdnet.md §1.2).
    pub fn target(key: Key, version: u8) -> Self {
        Self::new(Role::Target, key, version)
    }

    pub fn new(role: Role, key: Key, version: u8) -> Self {
        Self {
            role,
            keys: Keys::new(key),
            version,
            next_data_seq: 1,
            last_poke: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// True once a handshake has produced a data key.
    pub fn has_data_key(&self) -> bool {
        self.keys.data().is_some()
    }

    /// Seq the next data datagram will carry.
    pub fn next_data_seq(&self) -> u64 {
        self.next_data_seq
    }

    /// Host: answers a poke (kdnet.md §3.3, §3.4). The Response carries the poke's seq and the
    /// host's random half of the key; the version is copied from the poke; the data key is derived
    /// from the Response body and the data seq restarts at 1. Returns the datagram to send to
    /// the poke's source address.
    pub fn accept_poke(&mut self, poke: &Datagram, host_random: [u8; 32]) -> Result<Bytes> {
        if self.role != Role::Host {
            return Err(Error::Handshake("only a host answers pokes"));
        }
        if poke.channel != Channel::Control || poke.direction != Direction::TargetToHost {
            return Err(Error::Handshake("not a target control datagram"));
        }
        let offer = Poke::parse(&poke.body)?;
        let body = Response {
            client_key: offer.client_key,
            host_key: host_random,
        }
        .encode();
        let response = Datagram {
            version: poke.version,
            channel: Channel::Control,
            direction: Direction::HostToTarget,
            seq: poke.seq,
            body,
        };
        let bytes = datagram::seal(&response, &self.keys)?;
        self.version = poke.version;
        self.start_session(&response.body);
        Ok(bytes)
    }

    /// Target: seals a poke and remembers it, so that [`Endpoint::accept_response`] can check the
    /// echo (kdnet.md §3.2: the target chooses the seq; captures show +3 per poke).
    pub fn make_poke(&mut self, seq: u64, poke: &Poke) -> Result<Bytes> {
        if self.role != Role::Target {
            return Err(Error::Handshake("only a target sends pokes"));
        }
        let bytes = datagram::seal(
            &Datagram {
                version: self.version,
                channel: Channel::Control,
                direction: Direction::TargetToHost,
                seq,
                body: poke.encode(),
            },
            &self.keys,
        )?;
        self.last_poke = Some(SentPoke {
            seq,
            client_key: poke.client_key,
        });
        Ok(bytes)
    }

    /// Target: accepts the host's Response to the last poke. The echoed client key and seq must
    /// match that poke (whether Windows checks is unknown, kdnet.md §6.8; checking catches host
    /// bugs). The data key hashes the body as received (kdnet.md §6.6); the data seq restarts at 1.
    pub fn accept_response(&mut self, response: &Datagram) -> Result<()> {
        if self.role != Role::Target {
            return Err(Error::Handshake("only a target accepts responses"));
        }
        if response.channel != Channel::Control || response.direction != Direction::HostToTarget {
            return Err(Error::Handshake("not a host control datagram"));
        }
        let answer = Response::parse(&response.body)?;
        let poke = self
            .last_poke
            .ok_or(Error::Handshake("response before any poke"))?;
        if answer.client_key != poke.client_key {
            return Err(Error::Handshake(
                "response echoes another client key than the last poke's",
            ));
        }
        if response.seq != poke.seq {
            return Err(Error::Handshake(
                "response seq differs from the last poke's",
            ));
        }
        self.start_session(&response.body);
        Ok(())
    }

    /// DK from the Response body; a fresh data seq (kdnet.md §2.3, §4.1).
    fn start_session(&mut self, response_body: &[u8]) {
        let data_key = self.keys.control().data_key(response_body);
        self.keys.set_data_key(data_key);
        self.next_data_seq = 1;
    }

    /// Seals a data-channel body with the next seq (kdnet.md §4.1). The seq is used up only
    /// if sealing succeeds.
    pub fn seal_data(&mut self, body: &DataBody) -> Result<Bytes> {
        self.seal_data_raw(body.encode())
    }

    /// [`Endpoint::seal_data`] for a body that is already bytes.
    pub fn seal_data_raw(&mut self, body: impl Into<Bytes>) -> Result<Bytes> {
        let bytes = datagram::seal(
            &Datagram {
                version: self.version,
                channel: Channel::Data,
                direction: self.role.sends(),
                seq: self.next_data_seq,
                body: body.into(),
            },
            &self.keys,
        )?;
        self.next_data_seq += 1;
        Ok(bytes)
    }

    /// Opens a datagram from the peer: authenticated (kdnet.md §2.5), then the direction bit must be
    /// the other side's, then the body is classified.
    pub fn open(&self, bytes: &[u8]) -> Result<Opened> {
        let datagram = datagram::open(bytes, &self.keys)?;
        if datagram.direction == self.role.sends() {
            return Err(Error::WrongDirection(datagram.direction));
        }
        Ok(match datagram.channel {
            Channel::Control => Opened::Control {
                message: ControlMessage::parse(datagram.body.clone())?,
                datagram,
            },
            Channel::Data => Opened::Data {
                seq: datagram.seq,
                body: DataBody::parse(datagram.body),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::kdnet::NetAddr;

    const HOST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 1), 51111);
    const TARGET: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 72), 51111);

    fn key() -> Key {
        Key::parse("1.2.3.4").unwrap()
    }

    fn poke(counter: u8) -> Poke {
        let mut client_key = [0x5a; 32];
        client_key[0] = counter;
        Poke {
            client_key,
            target: TARGET.into(),
            host: HOST.into(),
            debugger: NetAddr::NONE_V4,
        }
    }

    fn control(opened: Opened) -> (Datagram, ControlMessage) {
        match opened {
            Opened::Control { datagram, message } => (datagram, message),
            other => panic!("expected control, got {other:?}"),
        }
    }

    /// Target pokes, host answers, target accepts: both hold the same data key.
    fn handshake() -> (Endpoint, Endpoint) {
        let mut host = Endpoint::host(key());
        let mut target = Endpoint::target(key(), 4);
        let wire = target.make_poke(3, &poke(1)).unwrap();
        let (poke_datagram, message) = control(host.open(&wire).unwrap());
        assert_eq!(message, ControlMessage::Poke(poke(1)));
        let wire = host.accept_poke(&poke_datagram, [0xEE; 32]).unwrap();
        assert_eq!(wire.len(), 358);
        assert_eq!(host.version(), 4);
        let (response, message) = control(target.open(&wire).unwrap());
        assert_eq!(response.seq, 3);
        assert_eq!(response.body.len(), 322);
        assert!(matches!(message, ControlMessage::Response(r) if r.host_key == [0xEE; 32]));
        target.accept_response(&response).unwrap();
        (host, target)
    }

    #[test]
    fn both_sides_derive_the_same_data_key() {
        let (host, target) = handshake();
        assert!(host.has_data_key() && target.has_data_key());
        assert_eq!(host.keys().data(), target.keys().data());
    }

    #[test]
    fn data_flows_both_ways_with_own_seqs() {
        let (mut host, mut target) = handshake();
        let ping = DataBody::Ping { host: *HOST.ip() };
        let wire = target.seal_data(&ping).unwrap();
        assert_eq!(
            host.open(&wire).unwrap(),
            Opened::Data { seq: 1, body: ping }
        );
        let wire = target.seal_data_raw(&b"kd packet bytes!"[..]).unwrap();
        assert_eq!(
            host.open(&wire).unwrap(),
            Opened::Data {
                seq: 2,
                body: DataBody::Kd(Bytes::from_static(b"kd packet bytes!"))
            }
        );
        let wire = host.seal_data(&DataBody::BreakIn).unwrap();
        assert_eq!(wire.len(), 38);
        assert_eq!(
            target.open(&wire).unwrap(),
            Opened::Data {
                seq: 1,
                body: DataBody::BreakIn
            }
        );
        assert_eq!(host.next_data_seq(), 2);
        assert_eq!(target.next_data_seq(), 3);
    }

    #[test]
    fn own_datagrams_are_rejected() {
        let (mut host, mut target) = handshake();
        let wire = host.seal_data(&DataBody::BreakIn).unwrap();
        assert_eq!(
            host.open(&wire),
            Err(Error::WrongDirection(Direction::HostToTarget))
        );
        let wire = target.seal_data(&DataBody::BreakIn).unwrap();
        assert_eq!(
            target.open(&wire),
            Err(Error::WrongDirection(Direction::TargetToHost))
        );
        let wire = target.make_poke(6, &poke(2)).unwrap();
        assert_eq!(
            target.open(&wire),
            Err(Error::WrongDirection(Direction::TargetToHost))
        );
    }

    #[test]
    fn no_data_before_the_handshake() {
        let mut host = Endpoint::host(key());
        assert_eq!(host.seal_data(&DataBody::BreakIn), Err(Error::NoDataKey));
        assert_eq!(host.next_data_seq(), 1);
        let (_, mut target) = handshake();
        let wire = target.seal_data(&DataBody::BreakIn).unwrap();
        assert_eq!(host.open(&wire), Err(Error::NoDataKey));
    }

    #[test]
    fn rehandshake_changes_the_key_and_restarts_seq() {
        let (mut host, mut target) = handshake();
        target.seal_data(&DataBody::BreakIn).unwrap();
        let old = host.keys().data().cloned();
        let wire = target.make_poke(6, &poke(2)).unwrap();
        let (datagram, _) = control(host.open(&wire).unwrap());
        let wire = host.accept_poke(&datagram, [0x77; 32]).unwrap();
        let (response, _) = control(target.open(&wire).unwrap());
        target.accept_response(&response).unwrap();
        assert_ne!(host.keys().data().cloned(), old);
        assert_eq!(host.keys().data(), target.keys().data());
        assert_eq!(target.next_data_seq(), 1);
    }

    #[test]
    fn response_must_echo_the_last_poke() {
        let mut host = Endpoint::host(key());
        let mut target = Endpoint::target(key(), 2);
        let first = target.make_poke(3, &poke(1)).unwrap();
        target.make_poke(6, &poke(2)).unwrap();
        let (datagram, _) = control(host.open(&first).unwrap());
        let wire = host.accept_poke(&datagram, [1; 32]).unwrap();
        let (response, _) = control(target.open(&wire).unwrap());
        assert!(matches!(
            target.accept_response(&response),
            Err(Error::Handshake(_))
        ));
        assert!(!target.has_data_key());

        // The last poke's client key with another poke's seq.
        let mut forged = response.clone();
        forged.body = Response {
            client_key: poke(2).client_key,
            host_key: [1; 32],
        }
        .encode();
        assert_eq!(
            target.accept_response(&forged),
            Err(Error::Handshake(
                "response seq differs from the last poke's"
            ))
        );
        forged.seq = 6;
        target.accept_response(&forged).unwrap();
        assert!(target.has_data_key());

        let fresh = Endpoint::target(key(), 2).accept_response(&forged);
        assert_eq!(fresh, Err(Error::Handshake("response before any poke")));
    }

    #[test]
    fn roles_are_enforced() {
        let mut host = Endpoint::host(key());
        let mut target = Endpoint::target(key(), 2);
        assert!(matches!(
            host.make_poke(1, &poke(1)),
            Err(Error::Handshake(_))
        ));
        let wire = target.make_poke(1, &poke(1)).unwrap();
        let (datagram, _) = control(host.open(&wire).unwrap());
        assert!(matches!(
            target.accept_poke(&datagram, [0; 32]),
            Err(Error::Handshake(_))
        ));
        assert!(matches!(
            host.accept_response(&datagram),
            Err(Error::Handshake(_))
        ));
    }

    #[test]
    fn wrong_key_is_an_authentication_failure() {
        let host = Endpoint::host(Key::parse("1.2.3.5").unwrap());
        let mut target = Endpoint::target(key(), 4);
        let wire = target.make_poke(3, &poke(1)).unwrap();
        assert_eq!(host.open(&wire), Err(Error::AuthenticationFailed));
    }
}
