"""OpenStack integration: Keystone token validation (auth_strategy = keystone) and Nova's port events."""
