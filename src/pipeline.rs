//! Wires the stages together: replication → pgoutput → strapi → access → io, and the
//! confirmed-position back-channel.
