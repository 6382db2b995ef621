//! Generated protobuf types: the public `chief_of_state.v1` API and the internal messages between nodes.
//! Module nesting mirrors the proto packages, which the generated cross-package paths rely on.

/// The public wire contract, identical to the original Chief of State.
pub mod chief_of_state {
    pub mod v1 {
        tonic::include_proto!("chief_of_state.v1");
    }
}

/// `google.rpc.Status`, the payload of the `grpc-status-details-bin` trailer.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Messages between the gateway, shard regions and nodes.
pub mod cos {
    pub mod internal {
        pub mod v1 {
            tonic::include_proto!("cos.internal.v1");
        }
    }
}

pub use self::cos::internal::v1 as internal;
pub use self::google::rpc as google_rpc;
