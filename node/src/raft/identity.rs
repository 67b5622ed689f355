//! Who this node is, persisted in its data directory.
//!
//! The identity (node id and cluster id) is what lets a restarted node
//! rejoin as itself. The join token is written before the node first asks
//! to join, so a joiner that crashes and retries is recognised, while a
//! node whose directory was wiped has a new token and cannot be mistaken
//! for its former self (openraft would panic on its reverted log).

use serde::{Deserialize, Serialize};

use crate::cluster::NodeId;

const TREE: &str = "identity";
const IDENTITY_KEY: &str = "identity";
const TOKEN_KEY: &str = "join_token";

/// A node's permanent identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its id in the cluster.
    pub node_id: NodeId,
    /// The cluster it belongs to.
    pub cluster_id: u64,
}

/// Failure to read or write the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// sled failed.
    #[error("cannot access the node identity: {0}")]
    Engine(#[from] sled::Error),
    /// The stored identity does not decode.
    #[error("the stored node identity is corrupt ({0}); the data directory is damaged")]
    Corrupt(String),
}

/// Reads the identity, if this node has one.
pub fn load(db: &sled::Db) -> Result<Option<Identity>, IdentityError> {
    let tree = db.open_tree(TREE)?;
    let Some(raw) = tree.get(IDENTITY_KEY)? else {
        return Ok(None);
    };
    decode_identity(&raw).map(Some)
}

/// Decodes a stored identity.
pub fn decode_identity(raw: &[u8]) -> Result<Identity, IdentityError> {
    crate::proto::codec::from_bytes(raw).map_err(|e| IdentityError::Corrupt(e.to_string()))
}

/// Decodes a stored join token: exactly 8 bytes, big-endian.
pub fn decode_join_token(raw: &[u8]) -> Result<u64, IdentityError> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| IdentityError::Corrupt(format!("join token is {} bytes, not 8", raw.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Stores the identity durably.
pub async fn save(db: &sled::Db, identity: Identity) -> Result<(), IdentityError> {
    let raw = crate::proto::codec::to_bytes(&identity)
        .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
    db.open_tree(TREE)?.insert(IDENTITY_KEY, raw)?;
    db.flush_async().await?;
    Ok(())
}

/// The join token of this data directory, created (durably) on first use.
pub async fn join_token(db: &sled::Db) -> Result<u64, IdentityError> {
    let tree = db.open_tree(TREE)?;
    if let Some(raw) = tree.get(TOKEN_KEY)? {
        return decode_join_token(&raw);
    }
    let token: u64 = rand::random();
    tree.insert(TOKEN_KEY, &token.to_be_bytes())?;
    db.flush_async().await?;
    Ok(token)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens the database again once the previous instance is gone:
    /// `flush_async` can answer before sled's own thread lets go of its
    /// handle, and until then the directory's lock is held.
    pub(crate) fn reopen(path: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("cannot reopen {}: {e}", path.display()),
            }
        }
    }

    #[tokio::test]
    async fn identity_and_token_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let token;
        {
            let db = sled::open(dir.path()).unwrap();
            assert_eq!(load(&db).unwrap(), None);
            token = join_token(&db).await.unwrap();
            assert_eq!(
                join_token(&db).await.unwrap(),
                token,
                "the token is created once"
            );
            save(
                &db,
                Identity {
                    node_id: 4,
                    cluster_id: 9,
                },
            )
            .await
            .unwrap();
        }
        let db = reopen(dir.path());
        assert_eq!(
            load(&db).unwrap(),
            Some(Identity {
                node_id: 4,
                cluster_id: 9
            })
        );
        assert_eq!(join_token(&db).await.unwrap(), token);
    }

    #[tokio::test]
    async fn a_damaged_identity_is_an_error() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree(TREE)
            .unwrap()
            .insert(IDENTITY_KEY, &[0xff][..])
            .unwrap();
        assert!(matches!(load(&db), Err(IdentityError::Corrupt(_))));
    }
}
