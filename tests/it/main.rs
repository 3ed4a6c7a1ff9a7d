//! Integration tests: each starts a real node and talks to it over sockets, as a user would.

mod api;
mod browser;
mod caching;
mod cli;
mod clients;
mod close;
mod cluster;
mod contract;
mod crash;
mod drain;
mod durability;
mod fanout;
mod front;
mod golden;
mod hostile;
mod lifecycle;
mod limits;
mod metrics;
mod properties;
mod redis;
mod resume;
mod season;
mod sim;
mod support;
mod viewers;
mod web;
