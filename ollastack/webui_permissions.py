"""Open WebUI 0.12.4's user permissions and their defaults (``DEFAULT_USER_PERMISSIONS`` in its config.py).

Open WebUI combines a user's permissions as the defaults for everyone OR'ed with those of each of the
user's groups: a group can only grant, never take away. The names are written ``section.name``, as Open
WebUI's ``has_permission`` reads them (``features.api_keys``, ``workspace.models``, ``chat.controls``).

Example: ``DEFAULTS["features"]["api_keys"] is False``; ``"chat.controls" in NAMES``
"""

DEFAULTS: dict[str, dict[str, bool]] = {
    "workspace": {
        "models": False, "knowledge": False, "prompts": False, "tools": False, "skills": False,
        "models_import": False, "models_export": False, "models_hidden": False, "prompts_import": False,
        "prompts_export": False, "tools_import": False, "tools_export": False, "skills_import": False,
        "skills_export": False,
    },
    "sharing": {
        "models": False, "public_models": False, "knowledge": False, "public_knowledge": False,
        "prompts": False, "public_prompts": False, "tools": False, "public_tools": False, "skills": False,
        "public_skills": False, "notes": False, "public_notes": False, "folders": False, "public_chats": False,
        "open_chats": False, "public_calendars": False,
    },
    "access_grants": {
        "allow_users": True, "allow_groups": True,
    },
    "chat": {
        "controls": True, "valves": True, "system_prompt": True, "params": True, "file_upload": True,
        "web_upload": True, "delete": True, "delete_message": True, "continue_response": True,
        "regenerate_response": True, "rate_response": True, "edit": True, "share": True, "export": True,
        "import": True, "stt": True, "tts": True, "call": True, "multiple_models": True, "temporary": True,
        "temporary_enforced": False,
    },
    "features": {
        "api_keys": False, "notes": True, "folders": True, "channels": True, "encrypted_channels": False,
        "direct_tool_servers": False, "web_search": True, "image_generation": True, "code_interpreter": True,
        "memories": True, "automations": False, "calendar": True, "webhooks": False,
    },
    "settings": {
        "interface": True,
    },
}
NAMES = tuple(f"{section}.{name}" for section, names in DEFAULTS.items() for name in names)
# The environment variable that seeds each permission for everyone (read once at start; ollastack
# sets ENABLE_PERSISTENT_CONFIG=false, so the environment is what a restart comes back to).
ENV: dict[str, str] = {
    "workspace.models": "USER_PERMISSIONS_WORKSPACE_MODELS_ACCESS",
    "workspace.knowledge": "USER_PERMISSIONS_WORKSPACE_KNOWLEDGE_ACCESS",
    "workspace.prompts": "USER_PERMISSIONS_WORKSPACE_PROMPTS_ACCESS",
    "workspace.tools": "USER_PERMISSIONS_WORKSPACE_TOOLS_ACCESS",
    "workspace.skills": "USER_PERMISSIONS_WORKSPACE_SKILLS_ACCESS",
    "workspace.models_import": "USER_PERMISSIONS_WORKSPACE_MODELS_IMPORT",
    "workspace.models_export": "USER_PERMISSIONS_WORKSPACE_MODELS_EXPORT",
    "workspace.models_hidden": "USER_PERMISSIONS_WORKSPACE_MODELS_HIDDEN",
    "workspace.prompts_import": "USER_PERMISSIONS_WORKSPACE_PROMPTS_IMPORT",
    "workspace.prompts_export": "USER_PERMISSIONS_WORKSPACE_PROMPTS_EXPORT",
    "workspace.tools_import": "USER_PERMISSIONS_WORKSPACE_TOOLS_IMPORT",
    "workspace.tools_export": "USER_PERMISSIONS_WORKSPACE_TOOLS_EXPORT",
    "workspace.skills_import": "USER_PERMISSIONS_WORKSPACE_SKILLS_IMPORT",
    "workspace.skills_export": "USER_PERMISSIONS_WORKSPACE_SKILLS_EXPORT",
    "sharing.models": "USER_PERMISSIONS_WORKSPACE_MODELS_ALLOW_SHARING",
    "sharing.public_models": "USER_PERMISSIONS_WORKSPACE_MODELS_ALLOW_PUBLIC_SHARING",
    "sharing.knowledge": "USER_PERMISSIONS_WORKSPACE_KNOWLEDGE_ALLOW_SHARING",
    "sharing.public_knowledge": "USER_PERMISSIONS_WORKSPACE_KNOWLEDGE_ALLOW_PUBLIC_SHARING",
    "sharing.prompts": "USER_PERMISSIONS_WORKSPACE_PROMPTS_ALLOW_SHARING",
    "sharing.public_prompts": "USER_PERMISSIONS_WORKSPACE_PROMPTS_ALLOW_PUBLIC_SHARING",
    "sharing.tools": "USER_PERMISSIONS_WORKSPACE_TOOLS_ALLOW_SHARING",
    "sharing.public_tools": "USER_PERMISSIONS_WORKSPACE_TOOLS_ALLOW_PUBLIC_SHARING",
    "sharing.skills": "USER_PERMISSIONS_WORKSPACE_SKILLS_ALLOW_SHARING",
    "sharing.public_skills": "USER_PERMISSIONS_WORKSPACE_SKILLS_ALLOW_PUBLIC_SHARING",
    "sharing.notes": "USER_PERMISSIONS_NOTES_ALLOW_SHARING",
    "sharing.public_notes": "USER_PERMISSIONS_NOTES_ALLOW_PUBLIC_SHARING",
    "sharing.folders": "USER_PERMISSIONS_FOLDERS_ALLOW_SHARING",
    "sharing.public_chats": "USER_PERMISSIONS_CHAT_ALLOW_PUBLIC_SHARING",
    "sharing.open_chats": "USER_PERMISSIONS_CHAT_ALLOW_OPEN_SHARING",
    "sharing.public_calendars": "USER_PERMISSIONS_CALENDAR_ALLOW_PUBLIC_SHARING",
    "access_grants.allow_users": "USER_PERMISSIONS_ACCESS_GRANTS_ALLOW_USERS",
    "access_grants.allow_groups": "USER_PERMISSIONS_ACCESS_GRANTS_ALLOW_GROUPS",
    "chat.controls": "USER_PERMISSIONS_CHAT_CONTROLS",
    "chat.valves": "USER_PERMISSIONS_CHAT_VALVES",
    "chat.system_prompt": "USER_PERMISSIONS_CHAT_SYSTEM_PROMPT",
    "chat.params": "USER_PERMISSIONS_CHAT_PARAMS",
    "chat.file_upload": "USER_PERMISSIONS_CHAT_FILE_UPLOAD",
    "chat.web_upload": "USER_PERMISSIONS_CHAT_WEB_UPLOAD",
    "chat.delete": "USER_PERMISSIONS_CHAT_DELETE",
    "chat.delete_message": "USER_PERMISSIONS_CHAT_DELETE_MESSAGE",
    "chat.continue_response": "USER_PERMISSIONS_CHAT_CONTINUE_RESPONSE",
    "chat.regenerate_response": "USER_PERMISSIONS_CHAT_REGENERATE_RESPONSE",
    "chat.rate_response": "USER_PERMISSIONS_CHAT_RATE_RESPONSE",
    "chat.edit": "USER_PERMISSIONS_CHAT_EDIT",
    "chat.share": "USER_PERMISSIONS_CHAT_SHARE",
    "chat.export": "USER_PERMISSIONS_CHAT_EXPORT",
    "chat.import": "USER_PERMISSIONS_CHAT_IMPORT",
    "chat.stt": "USER_PERMISSIONS_CHAT_STT",
    "chat.tts": "USER_PERMISSIONS_CHAT_TTS",
    "chat.call": "USER_PERMISSIONS_CHAT_CALL",
    "chat.multiple_models": "USER_PERMISSIONS_CHAT_MULTIPLE_MODELS",
    "chat.temporary": "USER_PERMISSIONS_CHAT_TEMPORARY",
    "chat.temporary_enforced": "USER_PERMISSIONS_CHAT_TEMPORARY_ENFORCED",
    "features.api_keys": "USER_PERMISSIONS_FEATURES_API_KEYS",
    "features.notes": "USER_PERMISSIONS_FEATURES_NOTES",
    "features.folders": "USER_PERMISSIONS_FEATURES_FOLDERS",
    "features.channels": "USER_PERMISSIONS_FEATURES_CHANNELS",
    "features.encrypted_channels": "USER_PERMISSIONS_FEATURES_ENCRYPTED_CHANNELS",
    "features.direct_tool_servers": "USER_PERMISSIONS_FEATURES_DIRECT_TOOL_SERVERS",
    "features.web_search": "USER_PERMISSIONS_FEATURES_WEB_SEARCH",
    "features.image_generation": "USER_PERMISSIONS_FEATURES_IMAGE_GENERATION",
    "features.code_interpreter": "USER_PERMISSIONS_FEATURES_CODE_INTERPRETER",
    "features.memories": "USER_PERMISSIONS_FEATURES_MEMORIES",
    "features.automations": "USER_PERMISSIONS_FEATURES_AUTOMATIONS",
    "features.calendar": "USER_PERMISSIONS_FEATURES_CALENDAR",
    "features.webhooks": "USER_PERMISSIONS_FEATURES_USER_WEBHOOKS",
    "settings.interface": "USER_PERMISSIONS_SETTINGS_INTERFACE",
}
