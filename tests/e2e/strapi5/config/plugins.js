// Strapi 5's template default for new projects: session-based users-permissions JWTs
// (`{"userId","sessionId","type":"access"}`, 10 minutes). The bridge reads this literal
// through --strapi-dir.
module.exports = () => ({
  'users-permissions': {
    config: {
      jwtManagement: 'refresh',
      sessions: {
        httpOnly: true,
      },
    },
  },
});
