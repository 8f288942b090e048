#include "engine/chat_template/chat_template.h"

#include <utility>

#include "common/status_macros.h"
#include "engine/chat_template/ast.h"
#include "engine/chat_template/globals.h"
#include "engine/chat_template/parser.h"
#include "engine/chat_template/renderer.h"
#include "engine/chat_template/value.h"

namespace arbor::engine {

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source, std::string name) {
  ASSIGN_OR_RETURN(std::unique_ptr<jinja::Template> tmpl,
                   jinja::ParseTemplate(source, std::move(name)));
  return ChatTemplate(std::shared_ptr<const jinja::Template>(std::move(tmpl)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context,
                                                 const ChatTemplateLimits& limits) const {
  ASSIGN_OR_RETURN(jinja::Value ctx, jinja::ValueFromJson(context));
  return jinja::RenderTemplate(*tmpl_, ctx, limits);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context,
                                                 const ChatTemplateLimits& limits) const {
  return Render(nlohmann::ordered_json(context), limits);
}

const std::string& ChatTemplate::name() const { return tmpl_->name; }

bool IsChatTemplateRaise(const absl::Status& status) { return jinja::IsRaisedError(status); }

}  // namespace arbor::engine
