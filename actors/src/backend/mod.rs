//! The upstream (layer 2 of 5): the calls the workers make to the model provider, and the
//! kinds of their replies and failures ([`bedrock::ErrorKind`]) that the retry policy and the
//! metrics read. Today that is Bedrock Runtime alone, in [`bedrock`].
//!
//! May import: [`crate::flow`]. Never the policies, the operators' view, the actors or the
//! broker.

pub mod bedrock;
