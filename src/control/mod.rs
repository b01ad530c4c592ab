//! Control plane: owns the config and routing state, builds tables and swaps them in.
//! Every change goes through one async lock here, never on the request path.

use crate::config::{Config, ConfigError};
use crate::dataplane::endpoint::{EndpointRegistry, EndpointSettings};
use crate::dataplane::proxy::DataPlane;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::Telemetry;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct Controller {
    pub plane: Arc<DataPlane>,
    pub telemetry: Arc<Telemetry>,
    endpoints: EndpointRegistry,
    config_path: PathBuf,
    state: Mutex<ControlState>,
}

struct ControlState {
    config: Config,
    services: BTreeMap<String, ServiceState>,
    revision: u64,
}

fn initial_state(config: &Config) -> BTreeMap<String, ServiceState> {
    config
        .services
        .iter()
        .map(|service| {
            let state = ServiceState {
                stable: service.stable.clone(),
                weights: service.weights.clone(),
                latched: false,
                frozen: false,
            };
            (service.name.clone(), state)
        })
        .collect()
}

impl Controller {
    pub fn new(config: Config, config_path: PathBuf, shards: usize) -> Controller {
        let endpoints = EndpointRegistry::new(EndpointSettings {
            connect_timeout: config.timeouts.connect.0,
            idle_timeout: config.timeouts.upstream_idle.0,
            backoff: config.timeouts.endpoint_backoff.0,
        });
        let telemetry = Arc::new(Telemetry::new(shards));
        let services = initial_state(&config);
        let table = RoutingTable::build(&config, &services, &endpoints, &telemetry, 1);
        Controller {
            plane: Arc::new(DataPlane {
                table: ArcSwap::from_pointee(table),
            }),
            telemetry,
            endpoints,
            config_path,
            state: Mutex::new(ControlState {
                config,
                services,
                revision: 1,
            }),
        }
    }

    pub async fn config(&self) -> Config {
        self.state.lock().await.config.clone()
    }

    /// Re-reads the config file. A valid file is swapped in whole; an invalid one
    /// changes nothing and its problems are returned.
    pub async fn reload(&self) -> Result<u64, ConfigError> {
        let config = Config::load(&self.config_path)?;
        let mut state = self.state.lock().await;
        let services = initial_state(&config);
        state.revision += 1;
        let table = RoutingTable::build(
            &config,
            &services,
            &self.endpoints,
            &self.telemetry,
            state.revision,
        );
        self.plane.table.store(Arc::new(table));
        self.endpoints.retain_used();
        state.config = config;
        state.services = services;
        Ok(state.revision)
    }
}
