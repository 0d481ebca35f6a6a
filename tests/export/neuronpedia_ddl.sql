-- Minimal Neuronpedia tables for the import test database, written by hand from Neuronpedia's published
-- schema (apps/webapp/prisma/schema.prisma and its migrations): the columns, NOT NULL columns, defaults,
-- unique keys and foreign keys of the tables its import touches.  Omitted: the ExplanationModelSettings
-- foreign key, indexes the import does not need, and pgvector ("Explanation"."embedding" is vector(256)
-- upstream; text here, and labeler exports no embeddings).
CREATE TYPE "Visibility" AS ENUM ('PUBLIC', 'UNLISTED', 'PRIVATE');
CREATE TABLE "User" (
  "id" text PRIMARY KEY,
  "name" text NOT NULL UNIQUE,
  "bio" text DEFAULT '',
  "email" text UNIQUE,
  "emailVerified" timestamp(3),
  "githubUsername" text,
  "bot" boolean NOT NULL DEFAULT false,
  "image" text,
  "admin" boolean NOT NULL DEFAULT false,
  "canTriggerExplanations" boolean NOT NULL DEFAULT false,
  "emailNewsletterNotification" boolean NOT NULL DEFAULT true,
  "emailUnsubscribeAll" boolean NOT NULL DEFAULT false,
  "emailUnsubscribeCode" text NOT NULL UNIQUE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "isProblemEditor" boolean NOT NULL DEFAULT false
);
CREATE TABLE "Model" (
  "id" text PRIMARY KEY,
  "displayNameShort" text NOT NULL DEFAULT '',
  "displayName" text NOT NULL DEFAULT '',
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "tlensId" text,
  "openRouterId" text,
  "dimension" integer,
  "thinking" boolean NOT NULL DEFAULT false,
  "visibility" "Visibility" NOT NULL DEFAULT 'PRIVATE',
  "defaultSourceSetName" text,
  "defaultSourceId" text,
  "defaultGraphSourceSetName" text,
  "inferenceEnabled" boolean NOT NULL DEFAULT false,
  "instruct" boolean NOT NULL DEFAULT false,
  "layers" integer NOT NULL,
  "neuronsPerLayer" integer NOT NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "owner" text NOT NULL,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "website" text
);
CREATE UNIQUE INDEX "Model_defaultSourceSetName_id_key" ON "Model"("defaultSourceSetName","id");
CREATE UNIQUE INDEX "Model_defaultSourceId_id_key" ON "Model"("defaultSourceId","id");
CREATE UNIQUE INDEX "Model_defaultGraphSourceSetName_id_key" ON "Model"("defaultGraphSourceSetName","id");
CREATE TABLE "SourceRelease" (
  "name" text NOT NULL,
  "visibility" "Visibility" NOT NULL DEFAULT 'PRIVATE',
  "isNewUi" boolean NOT NULL DEFAULT false,
  "featured" boolean NOT NULL DEFAULT false,
  "description" text NOT NULL,
  "descriptionShort" text,
  "urls" text[],
  "creatorEmail" text,
  "creatorName" text NOT NULL,
  "creatorNameShort" text,
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "defaultSourceSetName" text,
  "defaultSourceId" text,
  "defaultUmapSourceIds" text[] DEFAULT ARRAY[]::text[],
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX "SourceRelease_name_key" ON "SourceRelease"("name");
CREATE TABLE "SourceSet" (
  "modelId" text NOT NULL REFERENCES "Model"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "name" text NOT NULL,
  "hasDashboards" boolean NOT NULL DEFAULT true,
  "allowInferenceSearch" boolean NOT NULL DEFAULT true,
  "visibility" "Visibility" NOT NULL DEFAULT 'PRIVATE',
  "description" text NOT NULL,
  "type" text NOT NULL DEFAULT '',
  "creatorName" text NOT NULL,
  "urls" text[],
  "creatorEmail" text,
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "releaseName" text REFERENCES "SourceRelease"("name") ON UPDATE CASCADE ON DELETE CASCADE,
  "hasGraphs" boolean NOT NULL DEFAULT false,
  "graphEnabled" boolean NOT NULL DEFAULT false,
  "similarityMatrixEnabled" boolean NOT NULL DEFAULT false,
  "defaultOfModelId" text,
  "defaultGraphModelId" text,
  "defaultRange" integer NOT NULL DEFAULT 1,
  "defaultShowBreaks" boolean NOT NULL DEFAULT true,
  "showDfa" boolean NOT NULL DEFAULT false,
  "showCorrelated" boolean NOT NULL DEFAULT false,
  "showHeadAttribution" boolean NOT NULL DEFAULT false,
  "showUmap" boolean NOT NULL DEFAULT false,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX "SourceSet_modelId_name_key" ON "SourceSet"("modelId","name");
CREATE TABLE "Source" (
  "id" text NOT NULL,
  "modelId" text NOT NULL,
  "hasDashboards" boolean NOT NULL DEFAULT true,
  "inferenceEnabled" boolean NOT NULL DEFAULT false,
  "saelensConfig" jsonb,
  "saelensRelease" text,
  "saelensSaeId" text,
  "hfRepoId" text,
  "hfFolderId" text,
  "visibility" "Visibility" NOT NULL DEFAULT 'PRIVATE',
  "defaultOfModelId" text,
  "setName" text NOT NULL,
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "hasUmap" boolean NOT NULL DEFAULT false,
  "hasUmapLogSparsity" boolean NOT NULL DEFAULT false,
  "hasUmapClusters" boolean NOT NULL DEFAULT false,
  "num_prompts" integer,
  "num_tokens_in_prompt" integer,
  "dataset" text,
  "notes" text,
  "cosSimMatchModelId" text,
  "cosSimMatchSourceId" text,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY ("modelId","setName") REFERENCES "SourceSet"("modelId","name") ON UPDATE CASCADE ON DELETE RESTRICT
);
CREATE UNIQUE INDEX "Source_modelId_id_key" ON "Source"("modelId","id");
ALTER TABLE "Source" ADD FOREIGN KEY ("cosSimMatchSourceId","cosSimMatchModelId") REFERENCES "Source"("id","modelId") ON UPDATE CASCADE ON DELETE SET NULL;
ALTER TABLE "Model" ADD FOREIGN KEY ("defaultSourceSetName","id") REFERENCES "SourceSet"("name","modelId") ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE "Model" ADD FOREIGN KEY ("defaultGraphSourceSetName","id") REFERENCES "SourceSet"("name","modelId") ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE "Model" ADD FOREIGN KEY ("defaultSourceId","id") REFERENCES "Source"("id","modelId") ON UPDATE CASCADE ON DELETE CASCADE;
CREATE TABLE "Neuron" (
  "modelId" text NOT NULL REFERENCES "Model"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "layer" text NOT NULL,
  "index" text NOT NULL,
  "sourceSetName" text,
  "creatorId" text REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "maxActApprox" double precision DEFAULT 0,
  "hasVector" boolean NOT NULL DEFAULT false,
  "vector" double precision[] DEFAULT ARRAY[]::double precision[],
  "vectorLabel" text,
  "vectorDefaultSteerStrength" double precision DEFAULT 10,
  "hookName" text,
  "topkCosSimIndices" integer[] DEFAULT ARRAY[]::integer[],
  "topkCosSimValues" double precision[] DEFAULT ARRAY[]::double precision[],
  "neuron_alignment_indices" integer[] DEFAULT ARRAY[]::integer[],
  "neuron_alignment_values" double precision[] DEFAULT ARRAY[]::double precision[],
  "neuron_alignment_l1" double precision[] DEFAULT ARRAY[]::double precision[],
  "correlated_neurons_indices" integer[] DEFAULT ARRAY[]::integer[],
  "correlated_neurons_pearson" double precision[] DEFAULT ARRAY[]::double precision[],
  "correlated_neurons_l1" double precision[] DEFAULT ARRAY[]::double precision[],
  "correlated_features_indices" integer[] DEFAULT ARRAY[]::integer[],
  "correlated_features_pearson" double precision[] DEFAULT ARRAY[]::double precision[],
  "correlated_features_l1" double precision[] DEFAULT ARRAY[]::double precision[],
  "neg_str" text[] DEFAULT ARRAY[]::text[],
  "neg_values" double precision[] DEFAULT ARRAY[]::double precision[],
  "pos_str" text[] DEFAULT ARRAY[]::text[],
  "pos_values" double precision[] DEFAULT ARRAY[]::double precision[],
  "frac_nonzero" double precision NOT NULL DEFAULT 0,
  "freq_hist_data_bar_heights" double precision[] DEFAULT ARRAY[]::double precision[],
  "freq_hist_data_bar_values" double precision[] DEFAULT ARRAY[]::double precision[],
  "logits_hist_data_bar_heights" double precision[] DEFAULT ARRAY[]::double precision[],
  "logits_hist_data_bar_values" double precision[] DEFAULT ARRAY[]::double precision[],
  "decoder_weights_dist" double precision[] DEFAULT ARRAY[]::double precision[],
  "umap_cluster" integer,
  "umap_log_feature_sparsity" double precision,
  "umap_x" double precision,
  "umap_y" double precision,
  FOREIGN KEY ("modelId","layer") REFERENCES "Source"("modelId","id") ON UPDATE CASCADE ON DELETE CASCADE,
  FOREIGN KEY ("modelId","sourceSetName") REFERENCES "SourceSet"("modelId","name") ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE UNIQUE INDEX "Neuron_modelId_layer_index_key" ON "Neuron"("modelId","layer","index");
CREATE TABLE "Activation" (
  "id" text PRIMARY KEY,
  "tokens" text[],
  "dataIndex" text,
  "index" text NOT NULL,
  "layer" text NOT NULL,
  "modelId" text NOT NULL,
  "dataSource" text,
  "maxValue" double precision NOT NULL,
  "maxValueTokenIndex" integer NOT NULL,
  "minValue" double precision NOT NULL,
  "values" double precision[],
  "dfaValues" double precision[] DEFAULT ARRAY[]::double precision[],
  "dfaTargetIndex" integer,
  "dfaMaxValue" double precision,
  "zQIndices" integer[] DEFAULT ARRAY[]::integer[],
  "zKIndices" integer[] DEFAULT ARRAY[]::integer[],
  "zValues" double precision[] DEFAULT ARRAY[]::double precision[],
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "lossValues" double precision[] DEFAULT ARRAY[]::double precision[],
  "logitContributions" text,
  "binMin" double precision,
  "binMax" double precision,
  "binContains" double precision,
  "qualifyingTokenIndex" integer,
  FOREIGN KEY ("modelId","layer","index") REFERENCES "Neuron"("modelId","layer","index") ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX "activation_model_layer_index" ON "Activation"("modelId","layer","index");
CREATE TABLE "ExplanationModelType" (
  "name" text PRIMARY KEY,
  "displayName" text NOT NULL,
  "description" text NOT NULL,
  "featured" boolean NOT NULL DEFAULT true,
  "openRouterModelId" text,
  "url" text,
  "creatorName" text NOT NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "ExplanationType" (
  "name" text PRIMARY KEY,
  "displayName" text NOT NULL,
  "description" text NOT NULL,
  "featured" boolean NOT NULL DEFAULT true,
  "isAttention" boolean NOT NULL DEFAULT false,
  "explainerModelSettingsId" text,
  "settings" text,
  "url" text,
  "creatorName" text NOT NULL,
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "ExplanationScoreType" (
  "name" text PRIMARY KEY,
  "displayName" text NOT NULL,
  "description" text NOT NULL,
  "featured" boolean NOT NULL DEFAULT true,
  "isAttention" boolean NOT NULL DEFAULT false,
  "scoreDescription" text,
  "scorerModel" text,
  "settings" text,
  "url" text,
  "creatorName" text NOT NULL,
  "creatorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "ExplanationScoreModel" (
  "name" text PRIMARY KEY,
  "displayName" text NOT NULL,
  "description" text NOT NULL,
  "featured" boolean NOT NULL DEFAULT true,
  "openRouterModelId" text,
  "url" text,
  "creatorName" text NOT NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "Explanation" (
  "id" text PRIMARY KEY,
  "modelId" text NOT NULL REFERENCES "Model"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "layer" text NOT NULL,
  "index" text NOT NULL,
  "embedding" text,
  "description" text NOT NULL,
  "authorId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "triggeredByUserId" text REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE SET NULL,
  "notes" text,
  "scoreV1" double precision NOT NULL DEFAULT 0,
  "scoreV2" double precision,
  "umap_x" double precision DEFAULT 0,
  "umap_y" double precision DEFAULT 0,
  "umap_cluster" integer DEFAULT 0,
  "umap_log_feature_sparsity" double precision DEFAULT 0,
  "typeName" text REFERENCES "ExplanationType"("name") ON UPDATE CASCADE ON DELETE SET NULL,
  "explanationModelName" text REFERENCES "ExplanationModelType"("name") ON UPDATE CASCADE ON DELETE SET NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY ("modelId","layer","index") REFERENCES "Neuron"("modelId","layer","index") ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX "Explanation_modelId_layer_index_idx" ON "Explanation"("modelId","layer","index");
CREATE TABLE "ExplanationScore" (
  "id" text PRIMARY KEY,
  "initiatedByUserId" text NOT NULL REFERENCES "User"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "value" double precision NOT NULL,
  "explanationId" text NOT NULL REFERENCES "Explanation"("id") ON UPDATE CASCADE ON DELETE CASCADE,
  "explanationScoreTypeName" text NOT NULL REFERENCES "ExplanationScoreType"("name") ON UPDATE CASCADE ON DELETE CASCADE,
  "explanationScoreModelName" text NOT NULL REFERENCES "ExplanationScoreModel"("name") ON UPDATE CASCADE ON DELETE CASCADE,
  "jsonDetails" text NOT NULL DEFAULT '',
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "ExplanationScore_explanationId_idx" ON "ExplanationScore"("explanationId");
