//! What each PostgreSQL version and service offers: version facts in `check`, a least-privilege
//! replication role as managed services have, failover slots and standbys.
